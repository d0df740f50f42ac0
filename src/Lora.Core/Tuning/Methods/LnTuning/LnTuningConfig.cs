namespace Lora.Core.Tuning;

/// LayerNorm tuning (PEFT's LNTuningConfig, peft_type "LN_TUNING"): each targeted LayerNorm (or
/// LayerNorm2d) gets a trained copy of its affine weight and bias. With no
/// <see cref="TuningConfig.Targets"/>, every such norm outside the modules to save is tuned.
public sealed record LnTuningConfig : TuningConfig
{
    public override TuningMethod Method => LnTuningMethod.Instance;

    protected override string DescribeMethod() => "LN tuning";

    protected override void Check(List<string> errors)
    {
        if (Bias != BiasMode.None) errors.Add("Bias does not apply to LN tuning: the norms' biases train with their weights");
    }
}
