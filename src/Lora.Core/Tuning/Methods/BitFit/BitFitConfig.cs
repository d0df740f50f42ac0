namespace Lora.Core.Tuning;

/// BitFit (Ben Zaken et al. 2022): only biases train. Not a PEFT method: saved with peft_type
/// "BITFIT". With no <see cref="TuningConfig.Targets"/>, every bias of a Linear, Conv2d, LayerNorm,
/// BatchNorm2d or LayerNorm2d outside the modules to save trains.
public sealed record BitFitConfig : TuningConfig
{
    public override TuningMethod Method => BitFitMethod.Instance;

    protected override string DescribeMethod() => "BitFit";

    protected override void Check(List<string> errors)
    {
        if (Bias != BiasMode.None) errors.Add("Bias does not apply to BitFit: it trains the biases itself");
    }
}
