namespace Lora.Core.Tuning;

/// HRA (Yuan et al. 2024, Householder reflection adaptation), as PEFT's HRAConfig (peft_type
/// "HRA"): the input side is multiplied by r Householder reflections, W' = W·H₁⋯H_r with
/// Hᵢ = I − 2uᵢuᵢᵀ/‖uᵢ‖², or with apply_GS by I − 2UUᵀ for the Gram-Schmidt orthonormalised U.
public sealed record HraConfig : TuningConfig
{
    public override TuningMethod Method => HraMethod.Instance;

    /// r: the number of reflections (PEFT's default 8; even, for the identity start).
    public int Rank { get; init; } = 8;

    /// apply_GS: orthonormalise the reflection vectors (Gram-Schmidt) first.
    public bool ApplyGs { get; init; }

    /// init_weights: PEFT's symmetric start, each vector twice in a row (H₂ₖH₂ₖ₊₁ = I, no change);
    /// false (or an odd r) draws every vector Kaiming-uniform, as PEFT does.
    public bool InitWeights { get; init; } = true;

    protected override string DescribeMethod() => $"HRA r={Rank}{(ApplyGs ? " Gram-Schmidt" : "")}";

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add("Targets is empty: HRA needs at least one target module pattern (e.g. \"qkv\")");
        if (Rank <= 0) errors.Add($"Rank must be positive, got {Rank}");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with HRA here (PEFT's hra_only / all)");
    }
}
