namespace Lora.Core.Tuning;

/// The settings of one LoRA adapter on one layer (after per-module overrides are resolved).
public sealed record LoraOptions(int Rank, double Alpha, double Dropout = 0.0, bool UseRsLora = false, bool InitGaussian = false, bool UseDora = false)
{
    /// PEFT's scaling: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA.
    public double Scaling => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;
}
