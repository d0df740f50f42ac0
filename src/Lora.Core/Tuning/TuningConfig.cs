namespace Lora.Core.Tuning;

/// The parameter-efficient method to apply.
public enum TuningMethod { Lora, Dora, AdaLora, Adapter }

/// Which biases train besides the adapters (PEFT's `bias`): none, the biases of tuned layers only,
/// or every bias of the model.
public enum BiasMode { None, LoraOnly, All }

/// A tuning configuration: what to apply, where, and with which hyper-parameters.
/// Target patterns (<see cref="Targets"/>, <see cref="ModulesToSave"/>, the keys of
/// <see cref="RankPattern"/>/<see cref="AlphaPattern"/>) are matched against dotted module paths
/// (`blocks.0.attn.qkv`) in one of three ways: an exact path; a dotted suffix (`qkv` or `attn.qkv`
/// matches `blocks.0.attn.qkv`, never `blocks.0.attn.xqkv`); or, when written `re:&lt;regex&gt;`, a
/// regular expression that must match the whole path (`re:blocks\.[0-5]\.attn\.qkv`).
public sealed record TuningConfig
{
    /// The method: LoRA, DoRA (LoRA with a learned magnitude), AdaLoRA, or bottleneck Adapter.
    public TuningMethod Method { get; init; } = TuningMethod.Lora;

    /// Target module patterns (see the type's remarks). Ignored by the Adapter method, which uses
    /// every block implementing <see cref="IAdapterHost"/>.
    public IReadOnlyList<string> Targets { get; init; } = Array.Empty<string>();

    /// LoRA/DoRA rank r (AdaLoRA uses <see cref="InitRank"/>).
    public int Rank { get; init; } = 8;

    /// lora_alpha; LoRA scaling is Alpha / Rank (Alpha / √Rank with rsLoRA); AdaLoRA's is Alpha.
    public double Alpha { get; init; } = 8;

    /// Dropout probability on the adapter input (0: no dropout op).
    public double Dropout { get; init; }

    /// Rank-stabilised LoRA: scaling Alpha / √Rank.
    public bool UseRsLora { get; init; }

    /// Initialise lora_A from N(0, 1/r) instead of PEFT's Kaiming-uniform (lora_B stays zero).
    public bool InitGaussian { get; init; }

    /// Which biases train (PEFT's `bias`).
    public BiasMode Bias { get; init; } = BiasMode.None;

    /// Modules trained fully (e.g. the classifier `head`). A one-tensor layer (Linear, Conv2d,
    /// LayerNorm, Identity) is wrapped as PEFT does: the original is kept frozen as `original_module`
    /// and a trainable copy is used as `modules_to_save.&lt;adapter&gt;`. Any other module (SAM's mask
    /// decoder, whose forward takes several inputs; a composite head) is trained in place, as plain
    /// requires_grad: no copy, so disabling, deleting or unloading the adapter keeps its trained
    /// weights, and only one adapter may train it. Both are saved alike, `base_model.model.&lt;path&gt;.&lt;param&gt;`.
    public IReadOnlyList<string> ModulesToSave { get; init; } = Array.Empty<string>();

    /// Per-module rank overrides: pattern → rank (first matching pattern wins).
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();

    /// Per-module alpha overrides: pattern → alpha (first matching pattern wins).
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();

    /// AdaLoRA: the initial rank of every layer.
    public int InitRank { get; init; } = 12;

    /// The initial AdaLoRA rank when a spec gives only the target: ⌈1.5 × target⌉ (12 at PEFT's
    /// default target 8), as `lora run` and `lora summary` both use it.
    public static int DefaultInitRank(int targetRank) => (int)Math.Ceiling(1.5 * targetRank);

    /// AdaLoRA: the average rank per layer at the end of the schedule.
    public int TargetRank { get; init; } = 8;

    /// AdaLoRA: EMA coefficient of the importance.
    public double Beta1 { get; init; } = 0.85;

    /// AdaLoRA: EMA coefficient of the uncertainty.
    public double Beta2 { get; init; } = 0.85;

    /// AdaLoRA: steps of warm-up before the budget starts to shrink.
    public int TInit { get; init; }

    /// AdaLoRA: steps at the end with the final budget fixed.
    public int TFinal { get; init; }

    /// AdaLoRA: the allocator masks every DeltaT steps.
    public int DeltaT { get; init; } = 1;

    /// AdaLoRA: weight of the orthogonal regulariser added to the loss.
    public double OrthRegWeight { get; init; } = 0.5;

    /// AdaLoRA: the total number of training steps; 0 lets the training loop set it (IStepHook.Begin).
    public long TotalStep { get; init; }

    /// Adapter: bottleneck width as a fraction of the block width.
    public double AdapterRatio { get; init; } = 0.25;

    /// Adapter: bottleneck width in features; 0 uses <see cref="AdapterRatio"/> instead.
    public int AdapterWidth { get; init; }

    /// Adapter: scale of the MLP-parallel adapter.
    public double AdapterMlpScale { get; init; } = 0.5;

    /// Adapter: start as the identity (fc2 zero), so the tuned model first equals the base model.
    public bool AdapterInitIdentity { get; init; }

    /// Checks what can be checked without a model; throws ArgumentException naming the field.
    public void Validate()
    {
        var errors = new List<string>();
        if (Method != TuningMethod.Adapter && Targets.Count == 0) errors.Add($"Targets is empty: {Method} needs at least one target module pattern (e.g. \"qkv\")");
        if (Method is TuningMethod.Lora or TuningMethod.Dora && Rank <= 0) errors.Add($"Rank must be positive, got {Rank}");
        if (Dropout is < 0 or >= 1) errors.Add($"Dropout must be in [0, 1), got {Dropout}");
        if (Method == TuningMethod.AdaLora)
        {
            if (InitRank <= 0) errors.Add($"InitRank must be positive, got {InitRank}");
            if (TargetRank <= 0 || TargetRank > InitRank) errors.Add($"TargetRank must be in 1..InitRank ({InitRank}), got {TargetRank}");
            if (Beta1 is < 0 or >= 1 || Beta2 is < 0 or >= 1) errors.Add($"Beta1 and Beta2 must be in [0, 1), got {Beta1} and {Beta2}");
            if (DeltaT <= 0) errors.Add($"DeltaT must be positive, got {DeltaT}");
            if (OrthRegWeight <= 0) errors.Add($"OrthRegWeight must be positive (PEFT rejects 0), got {OrthRegWeight}");
            if (UseRsLora) errors.Add("UseRsLora does not apply to AdaLoRA");
            if (RankPattern.Count > 0) errors.Add("RankPattern does not apply to AdaLoRA: the rank allocator chooses the ranks");
        }
        if (Method == TuningMethod.Adapter)
        {
            if (AdapterRatio <= 0) errors.Add($"AdapterRatio must be positive, got {AdapterRatio}");
            if (AdapterWidth < 0) errors.Add($"AdapterWidth must be positive (or 0 to use AdapterRatio), got {AdapterWidth}");
            if (Targets.Count > 0) errors.Add("Targets does not apply to the Adapter method (it tunes every block implementing IAdapterHost)");
        }
        foreach (var (p, r) in RankPattern) if (r <= 0) errors.Add($"RankPattern['{p}'] must be positive, got {r}");
        foreach (var p in Targets.Concat(ModulesToSave).Concat(RankPattern.Keys).Concat(AlphaPattern.Keys))
            if (string.IsNullOrWhiteSpace(p)) errors.Add("a module pattern is empty");
            else if (ModulePattern.IsRegex(p))
                try { _ = Lora.Core.IO.SafeRegex.Create("^(?:" + p[3..] + ")$"); }
                catch (ArgumentException e) { errors.Add($"pattern '{p}' is not a valid regular expression: {e.Message}"); }
        if (errors.Count > 0) throw new ArgumentException("invalid tuning configuration: " + string.Join("; ", errors));
    }
}

/// Matching of module patterns against dotted paths (see <see cref="TuningConfig"/>).
public static class ModulePattern
{
    public static bool IsRegex(string pattern) => pattern.StartsWith("re:", StringComparison.Ordinal);

    public static bool Matches(string pattern, string path) =>
        IsRegex(pattern)
            ? Lora.Core.IO.SafeRegex.IsMatch("^(?:" + pattern[3..] + ")$", path)
            : path == pattern || path.EndsWith("." + pattern, StringComparison.Ordinal);
}
