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

    /// init_lora_weights beyond true/"gaussian": "pissa", "pissa_niter_K", "olora" (PiSSA and OLoRA
    /// residualise the targets' base weights in place; Linear targets only).
    public LoraInit Init { get; init; } = LoraInit.Kaiming;

    /// K of "pissa_niter_K": PiSSA by a randomised SVD with K subspace iterations (null: exact SVD).
    public int? PissaNiter { get; init; }

    /// LoRA+ (PEFT's create_loraplus_optimizer): lora_B, and as there every trainable vector, train at
    /// this ratio × the learning rate (null: off). An optimiser setting: not in adapter_config.json.
    public double? LoraPlusLrRatio { get; init; }

    /// q/v-only LoRA on fused qkv Linears (loralib's MergedLinear enable_lora): the parts of the out
    /// features ("q", "k", "v") the adapter changes; empty: plain LoRA. Not loadable by PEFT.
    public IReadOnlyList<string> FusedQkv { get; init; } = [];

    /// PEFT's init_lora_weights value: true, "gaussian", "pissa", "pissa_niter_K" or "olora".
    public string? InitName => (InitGaussian ? LoraInit.Gaussian : Init) switch
    {
        LoraInit.Gaussian => "gaussian",
        LoraInit.Pissa => PissaNiter is int k ? $"pissa_niter_{k}" : "pissa",
        LoraInit.Olora => "olora",
        _ => null,
    };

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

    protected override string DescribeMethod() => $"{MethodName} r={Rank} alpha={F(Alpha)}" + Extras();

    /// The non-default options of this unit (init, LoRA+, fused parts), for the description.
    string Extras() =>
        (InitName is { } i && !InitGaussian ? $" init={i}" : "") + (LoraPlusLrRatio is double q ? $" loraplus={F(q)}" : "")
        + (FusedQkv.Count > 0 ? $" fused_qkv={string.Join("+", FusedQkv)}" : "");

    public int RankFor(string path) => ModulePattern.FirstMatch(RankPattern, path, Rank);

    public double AlphaFor(string path) => ModulePattern.FirstMatch(AlphaPattern, path, Alpha);

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add($"Targets is empty: {MethodName} needs at least one target module pattern (e.g. \"qkv\")");
        CheckRank(errors);
        if (Dropout is < 0 or >= 1) errors.Add($"Dropout must be in [0, 1), got {Dropout}");
        if (PissaNiter is int niter && (Init != LoraInit.Pissa || niter < 1)) errors.Add($"PissaNiter {niter}: a positive number of subspace iterations, with PiSSA initialisation only");
        if (InitGaussian && Init != LoraInit.Kaiming) errors.Add($"InitGaussian and Init = {Init} are two initialisations: give one");
        if (LoraPlusLrRatio is double ratio && !(ratio > 0 && double.IsFinite(ratio))) errors.Add($"LoraPlusLrRatio must be a positive number, got {ratio}");
        foreach (var part in FusedQkv)
            if (!Tuning.FusedQkv.PartNames.Contains(part)) errors.Add($"FusedQkv part '{part}' is not one of {string.Join(", ", Tuning.FusedQkv.PartNames)}");
        if (FusedQkv.Distinct().Count() != FusedQkv.Count) errors.Add($"FusedQkv names a part twice: [{string.Join(", ", FusedQkv)}]");
        if (FusedQkv.Count > 0 && Variant != LoraVariant.Plain) errors.Add($"FusedQkv (q/v-only LoRA) has no {Variant.Name} form: use plain LoRA");
        if (FusedQkv.Count > 0 && Init is LoraInit.Pissa or LoraInit.Olora) errors.Add($"FusedQkv with {Init} initialisation is not defined: use the default or gaussian");
        foreach (var (p, r) in RankPattern) if (r <= 0) errors.Add($"RankPattern['{p}'] must be positive, got {r}");
    }

    /// The rank's limits (AdaLoRA checks its initial and target ranks and its schedule instead).
    protected virtual void CheckRank(List<string> errors)
    {
        if (Rank <= 0) errors.Add($"Rank must be positive, got {Rank}");
    }

    protected override IEnumerable<string> Patterns() => base.Patterns().Concat(RankPattern.Keys).Concat(AlphaPattern.Keys);
}
