namespace Lora.Core.Tuning;

/// Bottleneck adapters (Houlsby; Medical-SAM-Adapter) in every block implementing
/// <see cref="IAdapterHost"/>: not a PEFT method, saved with peft_type "BOTTLENECK_ADAPTER".
public sealed record BottleneckAdapterConfig : TuningConfig
{
    public override TuningMethod Method => BottleneckAdapterMethod.Instance;

    /// adapter_ratio: bottleneck width as a fraction of the block width.
    public double Ratio { get; init; } = 0.25;

    /// adapter_width: bottleneck width in features; 0 uses <see cref="Ratio"/> instead.
    public int Width { get; init; }

    /// adapter_mlp_scale: scale of the MLP-parallel adapter.
    public double MlpScale { get; init; } = 1.0;

    /// adapter_init_identity: start as the identity (fc2 zero), so the tuned model first equals the
    /// base model (Houlsby et al.); the spec conversion and the library agree on it.
    public bool InitIdentity { get; init; } = true;

    protected override string DescribeMethod() => Width > 0 ? $"Adapter width={Width}" : $"Adapter ratio={F(Ratio)}";

    protected override void Check(List<string> errors)
    {
        if (Ratio <= 0) errors.Add($"Ratio must be positive, got {Ratio}");
        if (Width < 0) errors.Add($"Width must be positive (or 0 to use Ratio), got {Width}");
        if (Targets.Count > 0) errors.Add("Targets does not apply to the Adapter method (it tunes every block implementing IAdapterHost)");
    }
}
