namespace Lora.Core.Tuning;

/// AdaptFormer (Chen et al. 2022): a scaled bottleneck (down, ReLU, up) parallel to the MLP of every
/// block implementing <see cref="IAdapterHost"/>: x ← x + mlp(n) + s · up(relu(down(n))). Not a PEFT
/// method: saved with peft_type "ADAPTFORMER". Not mergeable (ReLU).
public sealed record AdaptFormerConfig : TuningConfig
{
    public override TuningMethod Method => AdaptFormerMethod.Instance;

    /// The bottleneck width (the paper's 64 for ViT-B).
    public int Width { get; init; } = 64;

    /// s, the adapter's scale (the paper's 0.1).
    public double Scale { get; init; } = 0.1;

    protected override string DescribeMethod() => $"AdaptFormer width={Width} scale={F(Scale)}";

    protected override void Check(List<string> errors)
    {
        if (Width <= 0) errors.Add($"Width must be positive, got {Width}");
        if (!(Scale > 0)) errors.Add($"Scale must be positive, got {Scale}");
        if (Targets.Count > 0) errors.Add("Targets does not apply to AdaptFormer (it tunes every block implementing IAdapterHost)");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with AdaptFormer");
    }
}
