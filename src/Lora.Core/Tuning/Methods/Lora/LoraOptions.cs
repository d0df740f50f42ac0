namespace Lora.Core.Tuning;

/// How a new LoRA adapter's factors start (PEFT's init_lora_weights).
public enum LoraInit
{
    /// true: A Kaiming-uniform, B zero (a fresh adapter changes nothing).
    Kaiming,
    /// "gaussian": A from N(0, 1/r), B zero.
    Gaussian,
    /// "pissa" / "pissa_niter_K": A, B from the top-r singular triplets of W (exact, or randomised
    /// with K subspace iterations); the base weight becomes the residual W − s·B·A.
    Pissa,
    /// "olora": A, B from the QR decomposition of W (B = Q[:, :r], A = R[:r]); the base weight
    /// becomes the residual W − s·B·A.
    Olora,
}

/// The settings of one LoRA adapter on one layer (after per-module overrides are resolved).
public sealed record LoraOptions(int Rank, double Alpha, double Dropout = 0.0, bool UseRsLora = false, bool InitGaussian = false)
{
    /// How the adapter computes beside the factors: plain LoRA, or a variant such as DoRA.
    public LoraVariant Variant { get; init; } = LoraVariant.Plain;

    /// PEFT's use_dora: the DoRA variant.
    public bool UseDora { get => Variant == LoraVariant.Dora; init => Variant = value ? LoraVariant.Dora : LoraVariant.Plain; }

    /// PEFT's scaling: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA.
    public double Scaling => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;

    /// The initialisation beyond <see cref="InitGaussian"/> (PiSSA, OLoRA); InitGaussian wins when set.
    public LoraInit Init { get; init; } = LoraInit.Kaiming;

    /// PiSSA's randomised SVD: the number of subspace iterations K of "pissa_niter_K" (null: exact SVD).
    public int? PissaNiter { get; init; }

    /// LoRA+: B's learning rate is this ratio × the learning rate (null: off).
    public double? LoraPlusLrRatio { get; init; }

    /// q/v-only LoRA on a fused qkv Linear (loralib's MergedLinear enable_lora): which equal thirds
    /// of the out features (q, k, v) the adapter changes; null: all of them (plain LoRA).
    public bool[]? FusedParts { get; init; }

    /// The initialisation this adapter uses.
    public LoraInit Initialisation => InitGaussian ? LoraInit.Gaussian : Init;
}
