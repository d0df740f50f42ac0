namespace Lora.Core.Tuning;

/// Convpass (Jie &amp; Deng 2022, "Convolutional Bypasses Are Better Vision Transformer Adapters"):
/// a 3×3-conv bottleneck on the token grid beside the attention and the MLP of every block
/// implementing <see cref="IBypassHost"/>, scaled by s. Not a PEFT method: saved with peft_type
/// "CONVPASS". Not mergeable (QuickGELU, and a 3×3 conv over neighbouring tokens).
public sealed record ConvpassConfig : TuningConfig
{
    public override TuningMethod Method => ConvpassMethod.Instance;

    /// The bottleneck width (the paper's dim 8).
    public int Width { get; init; } = 8;

    /// s, the bypasses' scale (the reference code's default 1; its VTAB configs pick 0.01 to 100).
    public double Scale { get; init; } = 1.0;

    /// Dropout before the up projection (the reference code's 0.1).
    public double Dropout { get; init; } = 0.1;

    protected override string DescribeMethod() => $"Convpass width={Width} scale={F(Scale)}";

    protected override void Check(List<string> errors)
    {
        if (Width <= 0) errors.Add($"Width must be positive, got {Width}");
        if (!(Scale > 0)) errors.Add($"Scale must be positive, got {Scale}");
        if (Dropout is < 0 or >= 1) errors.Add($"Dropout must be in [0, 1), got {Dropout}");
        if (Targets.Count > 0) errors.Add("Targets does not apply to Convpass (it tunes every block implementing IBypassHost)");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with Convpass");
    }
}
