namespace Lora.Core.Tuning;

/// FacT's two factorisations of the stacked ΔW tensor (Jie &amp; Deng 2023).
public enum FactVariant
{
    /// Tensor-train: shared U, V and one small Σ per d×d slice (the reference's FacTs).
    Tt,
    /// Tucker: shared U, V, a core C (r×r×r) and a factor P (r × slices); slice t's Σ = (C ×₃ p_t)ᵀ.
    Tk,
}

/// FacT (Jie &amp; Deng 2023, "FacT: Factor-Tuning for Lightweight Adaptation on Vision
/// Transformer"): every target Linear's ΔW is cut into d×d slices (qkv: 3, fc1 and fc2: 4 in a ViT),
/// and all slices of all blocks share the factors U (r × d) and V (d × r):
/// ΔW slice = s · V Σ U, with Σ per slice (TT) or from a shared Tucker core (TK). Mergeable: it is a
/// low-rank ΔW per layer. Not a PEFT method: saved with peft_type "FACT".
public sealed record FactConfig : TuningConfig
{
    public override TuningMethod Method => FactMethod.Instance;

    /// The paper's layers in a timm ViT (attn.proj, not patch_embed.proj).
    public FactConfig() => Targets = ["qkv", "attn.proj", "fc1", "fc2"];

    /// r, the factors' rank (the reference code's `dim`, 8 by default).
    public int Rank { get; init; } = 8;

    public FactVariant Variant { get; init; } = FactVariant.Tt;

    /// s, the scale of every ΔW (the reference's default 1; its VTAB configs pick 0.01 to 100).
    public double Scale { get; init; } = 1.0;

    /// Dropout on the rank-space activations after Σ (the reference code's 0.1).
    public double Dropout { get; init; } = 0.1;

    protected override string DescribeMethod() => $"FacT-{(Variant == FactVariant.Tt ? "TT" : "TK")} r={Rank} scale={F(Scale)}";

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add("Targets is empty: FacT needs its target Linears (the paper's qkv, proj, fc1, fc2)");
        if (Rank <= 0) errors.Add($"Rank must be positive, got {Rank}");
        if (!(Scale > 0)) errors.Add($"Scale must be positive, got {Scale}");
        if (Dropout is < 0 or >= 1) errors.Add($"Dropout must be in [0, 1), got {Dropout}");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with FacT");
    }
}
