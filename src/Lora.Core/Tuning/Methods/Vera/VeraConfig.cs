namespace Lora.Core.Tuning;

/// VeRA (Kopiczko et al. 2024), as PEFT's VeraConfig: one pair of frozen random matrices A (r × in),
/// B (out × r) shared by every target (sized for the largest, sliced per layer), and per layer two
/// trained vectors: ΔW = (λ_b ⊙ B) · (λ_d ⊙ A).
public sealed record VeraConfig : TuningConfig
{
    public override TuningMethod Method => VeraMethod.Instance;

    /// r: the shared matrices' rank (PEFT's default 256).
    public int Rank { get; init; } = 256;

    /// projection_prng_key: the seed of the shared A and B (Kaiming-uniform, PEFT's draw order A then B).
    public int ProjectionPrngKey { get; init; }

    /// save_projection: the checkpoint holds A and B (`base_model.vera_A`, `base_model.vera_B`); else they are redrawn from the key.
    public bool SaveProjection { get; init; } = true;

    /// d_initial: λ_d's starting value (λ_b starts at zero, so a fresh adapter changes nothing).
    public double DInitial { get; init; } = 0.1;

    /// init_weights: λ_b zero and λ_d = d_initial; false: λ_b one and λ_d ~ N(0, 1), as PEFT.
    public bool InitWeights { get; init; } = true;

    /// vera_dropout on the adapter input.
    public double Dropout { get; init; }

    protected override string DescribeMethod() => $"VeRA r={Rank}";

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add("Targets is empty: VeRA needs at least one target module pattern (e.g. \"qkv\")");
        if (Rank <= 0) errors.Add($"Rank must be positive, got {Rank}");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with VeRA here");
        if (Dropout is < 0 or >= 1) errors.Add($"Dropout must be in [0, 1), got {Dropout}");
    }
}
