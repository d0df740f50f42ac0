namespace Lora.Core.Tuning;

/// OFT (Qiu et al. 2023; Liu et al. 2024's OFTv2), as PEFT's OFTConfig (peft_type "OFT"): each
/// target's input side is rotated by a block-diagonal orthogonal matrix, each block the Cayley
/// transform of a trained skew-symmetric matrix, so W' = W·Rᵀ (PEFT's merge: Wᵀ ← R·Wᵀ). Exactly one
/// of <see cref="Rank"/> (the number of blocks) and <see cref="BlockSize"/> is non-zero; the other
/// follows from the layer's input size (in_features, or in_channels·k² of a Conv2d) and a value that
/// does not divide it is moved to the nearest divisor, as PEFT does.
public sealed record OftConfig : TuningConfig
{
    public override TuningMethod Method => OftMethod.Instance;

    /// r: the number of blocks per layer (0: from <see cref="BlockSize"/>).
    public int Rank { get; init; }

    /// oft_block_size: the size of each block (0: from <see cref="Rank"/>); PEFT's default 32.
    public int BlockSize { get; init; } = 32;

    /// module_dropout: in training, this fraction of the blocks is replaced by the identity each
    /// forward (PEFT's MultiplicativeDropoutLayer; PEFT 0.20 builds it but never applies it).
    public double ModuleDropout { get; init; }

    /// coft: the constrained variant; each block's skew-symmetric matrix is projected into a ball of
    /// radius <see cref="Eps"/>/√blocks around zero before every use.
    public bool Coft { get; init; }

    /// eps: COFT's radius (PEFT's default 6e-5).
    public double Eps { get; init; } = 6e-5;

    /// block_share: one block shared by all blocks of a layer.
    public bool BlockShare { get; init; }

    /// use_cayley_neumann: the Cayley transform by a truncated Neumann series (PEFT's default) rather
    /// than the exact solve.
    public bool UseCayleyNeumann { get; init; } = true;

    /// num_cayley_neumann_terms (PEFT's default 5).
    public int NumCayleyNeumannTerms { get; init; } = 5;

    /// init_weights: start at zero (R = I, no change); false draws N(0, 0.1) as PEFT does.
    public bool InitWeights { get; init; } = true;

    protected override string DescribeMethod() =>
        (Rank > 0 ? $"OFT r={Rank}" : $"OFT block={BlockSize}") + (Coft ? $" coft eps={Eps:g3}" : "") + (BlockShare ? " shared" : "");

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add("Targets is empty: OFT needs at least one target module pattern (e.g. \"qkv\")");
        if (Rank < 0 || BlockSize < 0) errors.Add($"Rank and BlockSize must not be negative, got r={Rank}, oft_block_size={BlockSize}");
        else if ((Rank != 0) == (BlockSize != 0))
            errors.Add($"give exactly one of Rank (r) and BlockSize (oft_block_size), the other is 0 (r × oft_block_size = the layer's input size); got r={Rank}, oft_block_size={BlockSize}");
        if (ModuleDropout is < 0 or >= 1) errors.Add($"ModuleDropout must be in [0, 1), got {ModuleDropout}");
        if (Coft && !(Eps > 0)) errors.Add($"Eps must be positive with COFT, got {Eps}");
        if (NumCayleyNeumannTerms < 1) errors.Add($"NumCayleyNeumannTerms must be at least 1, got {NumCayleyNeumannTerms}");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with OFT here (PEFT's oft_only / all)");
    }

    /// PEFT's adjust_oft_parameters: the divisor of <paramref name="n"/> nearest to <paramref name="value"/>
    /// (the lower one on a tie); n itself when the value is larger.
    public static int Adjust(int n, int value)
    {
        if (value >= n) return n;
        var higher = value;
        while (higher <= n && n % higher != 0) higher++;
        var lower = value;
        while (lower > 1 && n % lower != 0) lower--;
        return value - lower <= higher - value ? lower : higher;
    }

    /// (blocks, block size) on a layer whose rotated side has <paramref name="n"/> features.
    public (int Blocks, int BlockSize) Resolve(int n)
    {
        if (Rank == 0)
        {
            var b = n % BlockSize != 0 || BlockSize > n ? Adjust(n, BlockSize) : BlockSize;
            return (n / b, b);
        }
        var r = n % Rank != 0 || Rank > n ? Adjust(n, Rank) : Rank;
        return (r, n / r);
    }
}
