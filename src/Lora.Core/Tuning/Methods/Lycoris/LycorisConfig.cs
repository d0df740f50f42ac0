namespace Lora.Core.Tuning;

/// What PEFT's LyCORIS configurations (LoHaConfig, LoKrConfig) share: a rank and alpha (scaling
/// alpha / r), per-module overrides, and the effective-conv2d (CP) decomposition of k×k convolutions.
/// Rank and module dropout are not supported (a checkpoint with them is refused).
public abstract record LycorisConfig : TuningConfig
{
    /// r: the rank of every target without a <see cref="RankPattern"/> entry.
    public int Rank { get; init; } = 8;

    /// alpha; the scaling is Alpha / Rank.
    public double Alpha { get; init; } = 8;

    /// use_effective_conv2d: a k×k Conv2d's ΔW from a CP (Tucker) core of r×r×k×k.
    public bool UseEffectiveConv2d { get; init; }

    /// init_weights: the product starts at zero (no change); false draws every factor at random, as PEFT does.
    public bool InitWeights { get; init; } = true;

    /// rank_pattern: per-module rank overrides, pattern → rank (first matching pattern wins).
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();

    /// alpha_pattern: per-module alpha overrides, pattern → alpha (first matching pattern wins).
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();

    public int RankFor(string path) => ModulePattern.FirstMatch(RankPattern, path, Rank);

    public double AlphaFor(string path) => ModulePattern.FirstMatch(AlphaPattern, path, Alpha);

    protected override string DescribeMethod() => $"{Method.Name} r={Rank} alpha={F(Alpha)}{(UseEffectiveConv2d ? " effective-conv2d" : "")}";

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add($"Targets is empty: {Method.Name} needs at least one target module pattern (e.g. \"qkv\")");
        if (Rank <= 0) errors.Add($"Rank must be positive, got {Rank}");
        if (Bias != BiasMode.None) errors.Add($"Bias does not apply to {Method.Name} (PEFT's config has no bias option)");
        foreach (var (p, r) in RankPattern) if (r <= 0) errors.Add($"RankPattern['{p}'] must be positive, got {r}");
    }

    protected override IEnumerable<string> Patterns() => base.Patterns().Concat(RankPattern.Keys).Concat(AlphaPattern.Keys);
}
