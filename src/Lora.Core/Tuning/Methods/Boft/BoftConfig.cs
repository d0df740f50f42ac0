namespace Lora.Core.Tuning;

/// BOFT (Liu et al. 2024, butterfly orthogonal fine-tuning), as PEFT's BOFTConfig (peft_type
/// "BOFT"): the input side is rotated by a product of boft_n_butterfly_factor block-diagonal
/// orthogonal matrices, each conjugated by a butterfly permutation, and the outputs are scaled by
/// a trained vector: W' = (M·Wᵀ)ᵀ ⊙ s. Exactly one of <see cref="BlockSize"/> and
/// <see cref="BlockNum"/> is non-zero; unlike OFT a value that does not fit a layer is an error (as PEFT).
public sealed record BoftConfig : TuningConfig
{
    public override TuningMethod Method => BoftMethod.Instance;

    /// boft_block_size (PEFT's default 4; 0: from <see cref="BlockNum"/>).
    public int BlockSize { get; init; } = 4;

    /// boft_block_num (0: from <see cref="BlockSize"/>).
    public int BlockNum { get; init; }

    /// boft_n_butterfly_factor: 1 is OFT's single block-diagonal rotation (PEFT uses 1 whenever its
    /// CUDA extension fails to build; here every factor runs on any device).
    public int ButterflyFactor { get; init; } = 1;

    /// boft_dropout: in training, ⌊p·blocks⌋ blocks of one random factor become the identity.
    public double Dropout { get; init; }

    /// init_weights: R = 0 (rotation I) and s = 1 (no change); false draws N(0, 0.1) and N(1, 0.1).
    public bool InitWeights { get; init; } = true;

    protected override string DescribeMethod() =>
        (BlockNum > 0 ? $"BOFT blocks={BlockNum}" : $"BOFT block={BlockSize}") + (ButterflyFactor > 1 ? $" butterfly={ButterflyFactor}" : "");

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add("Targets is empty: BOFT needs at least one target module pattern (e.g. \"qkv\")");
        if (BlockSize < 0 || BlockNum < 0) errors.Add($"BlockSize and BlockNum must not be negative, got boft_block_size={BlockSize}, boft_block_num={BlockNum}");
        else if ((BlockSize != 0) == (BlockNum != 0))
            errors.Add($"give exactly one of BlockSize (boft_block_size) and BlockNum (boft_block_num), the other 0; got {BlockSize} and {BlockNum}");
        if (ButterflyFactor < 1) errors.Add($"ButterflyFactor must be at least 1, got {ButterflyFactor}");
        if (Dropout is < 0 or >= 1) errors.Add($"Dropout must be in [0, 1), got {Dropout}");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with BOFT here (PEFT's boft_only / all)");
    }

    /// (blocks, block size) on a layer of <paramref name="n"/> input features, or PEFT's reason why not.
    public (int Blocks, int BlockSize, string? Error) Resolve(long n)
    {
        var m = ButterflyFactor - 1;
        int d, b;
        if (BlockSize == 0)
        {
            d = BlockNum;
            if (n % d != 0) return (0, 0, $"{n} input features are not divisible by boft_block_num {d}");
            if (m != 0 && (m > (int)Math.Log2(d) || d % (1 << m) != 0))
                return (0, 0, $"boft_block_num {d} must be a multiple of 2^(boft_n_butterfly_factor − 1) = {1 << Math.Min(m, 30)}");
            b = (int)(n / d);
        }
        else
        {
            b = BlockSize;
            if (n % b != 0) return (0, 0, $"{n} input features are not divisible by boft_block_size {b}");
            if (m != 0 && (m > 30 || n % ((long)b << m) != 0))
                return (0, 0, $"{n} input features are not divisible by boft_block_size · 2^(boft_n_butterfly_factor − 1) = {(long)b << Math.Min(m, 30)}");
            d = (int)(n / b);
        }
        if (m != 0 && (d % 2 != 0 || b % 2 != 0)) return (0, 0, $"with butterfly factors both boft_block_num ({d}) and boft_block_size ({b}) must be even");
        return (d, b, null);
    }
}
