namespace Lora.Core.Tuning;

/// The settings of one LoRA adapter on one layer (after per-module overrides are resolved).
public sealed record LoraOptions(int Rank, double Alpha, double Dropout = 0.0, bool UseRsLora = false, bool InitGaussian = false)
{
    /// How the adapter computes beside the factors: plain LoRA, or a variant such as DoRA.
    public LoraVariant Variant { get; init; } = LoraVariant.Plain;

    /// PEFT's use_dora: the DoRA variant.
    public bool UseDora { get => Variant == LoraVariant.Dora; init => Variant = value ? LoraVariant.Dora : LoraVariant.Plain; }

    /// PEFT's scaling: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA.
    public double Scaling => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;
}
