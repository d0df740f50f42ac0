namespace Lora.Core.Tuning;

/// SSF (Lian et al. 2022, "Scaling &amp; Shifting Your Features"): a learned per-channel scale γ and
/// shift β after each targeted Linear, Conv2d or norm, y = γ ⊙ f(x) + β, merged into the layer
/// (W' = γ ⊙ W, b' = γ ⊙ b + β). Not a PEFT method: saved with peft_type "SSF". With no
/// <see cref="TuningConfig.Targets"/>, every such layer (with a bias) outside the modules to save.
/// γ starts at one and β at zero, so a fresh adapter changes nothing (the paper draws them
/// N(1, 0.02) and N(0, 0.02); <see cref="InitStd"/> does that).
public sealed record SsfConfig : TuningConfig
{
    public override TuningMethod Method => SsfMethod.Instance;

    /// Standard deviation of γ ~ N(1, σ) and β ~ N(0, σ) at initialisation; 0: exactly one and zero.
    public double InitStd { get; init; }

    protected override string DescribeMethod() => InitStd > 0 ? $"SSF init_std={F(InitStd)}" : "SSF";

    protected override void Check(List<string> errors)
    {
        if (Bias != BiasMode.None) errors.Add("Bias does not apply to SSF: its shift trains in place of the biases");
        if (!(InitStd >= 0 && InitStd < 1)) errors.Add($"InitStd must be in [0, 1), got {InitStd}");
    }
}
