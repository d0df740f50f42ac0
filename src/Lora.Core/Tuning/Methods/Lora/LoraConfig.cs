namespace Lora.Core.Tuning;

/// LoRA's configuration, with PEFT LoraConfig's fields (the `Variant` is PEFT's use_dora).
public record LoraConfig : TuningConfig
{
    public override TuningMethod Method => LoraMethod.Instance;

    /// r: the rank of every target without a <see cref="RankPattern"/> entry.
    public int Rank { get; init; } = 8;

    /// lora_alpha; LoRA scaling is Alpha / Rank (Alpha / √Rank with rsLoRA); AdaLoRA's is Alpha.
    public double Alpha { get; init; } = 8;

    /// lora_dropout: dropout probability on the adapter input (0: no dropout op).
    public double Dropout { get; init; }

    /// use_rslora: rank-stabilised LoRA, scaling Alpha / √Rank.
    public bool UseRsLora { get; init; }

    /// init_lora_weights = "gaussian": lora_A from N(0, 1/r) instead of Kaiming-uniform (lora_B stays zero).
    public bool InitGaussian { get; init; }

    /// rank_pattern: per-module rank overrides, pattern → rank (first matching pattern wins).
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();

    /// alpha_pattern: per-module alpha overrides, pattern → alpha (first matching pattern wins).
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();

    /// Plain LoRA or a variant of it (<see cref="LoraVariant.Dora"/>).
    public LoraVariant Variant { get; init; } = LoraVariant.Plain;

    /// PEFT's use_dora: the DoRA variant.
    public bool UseDora { get => Variant == LoraVariant.Dora; init => Variant = value ? LoraVariant.Dora : LoraVariant.Plain; }

    /// The method's name in messages and summaries ("LoRA", "DoRA", "AdaLoRA").
    public virtual string MethodName => Variant.Name;

    protected override string DescribeMethod() => $"{MethodName} r={Rank} alpha={F(Alpha)}";

    public int RankFor(string path) => ModulePattern.FirstMatch(RankPattern, path, Rank);

    public double AlphaFor(string path) => ModulePattern.FirstMatch(AlphaPattern, path, Alpha);

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add($"Targets is empty: {MethodName} needs at least one target module pattern (e.g. \"qkv\")");
        CheckRank(errors);
        if (Dropout is < 0 or >= 1) errors.Add($"Dropout must be in [0, 1), got {Dropout}");
        foreach (var (p, r) in RankPattern) if (r <= 0) errors.Add($"RankPattern['{p}'] must be positive, got {r}");
    }

    /// The rank's limits (AdaLoRA checks its initial and target ranks and its schedule instead).
    protected virtual void CheckRank(List<string> errors)
    {
        if (Rank <= 0) errors.Add($"Rank must be positive, got {Rank}");
    }

    protected override IEnumerable<string> Patterns() => base.Patterns().Concat(RankPattern.Keys).Concat(AlphaPattern.Keys);
}
