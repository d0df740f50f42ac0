namespace Lora.Core.Tuning;

/// Which biases train besides the adapters (PEFT's `bias`): none, the biases of tuned layers only,
/// or every bias of the model.
public enum BiasMode { None, LoraOnly, All }

/// What every method's configuration has (PEFT's PeftConfig + the fields its tuners share); each
/// method brings its own record deriving from it (<see cref="LoraConfig"/>, <see cref="AdaLoraConfig"/>,
/// <see cref="BottleneckAdapterConfig"/>) and names its <see cref="Method"/>.
/// Target patterns (<see cref="Targets"/>, <see cref="ModulesToSave"/>, a method's per-module
/// patterns) are matched against dotted module paths (`blocks.0.attn.qkv`) in one of three ways: an
/// exact path; a dotted suffix (`qkv` or `attn.qkv` matches `blocks.0.attn.qkv`, never
/// `blocks.0.attn.xqkv`); or, when written `re:&lt;regex&gt;`, a regular expression that must match the
/// whole path (`re:blocks\.[0-5]\.attn\.qkv`).
public abstract record TuningConfig
{
    /// The method this configuration is for (its tuner: matching, layers, checkpoint format).
    public abstract TuningMethod Method { get; }

    /// Target module patterns (PEFT's target_modules; see the type's remarks).
    public IReadOnlyList<string> Targets { get; init; } = Array.Empty<string>();

    /// Which biases train (PEFT's `bias`).
    public BiasMode Bias { get; init; } = BiasMode.None;

    /// Modules trained fully (e.g. the classifier `head`). A one-tensor layer (Linear, Conv2d,
    /// LayerNorm, Identity) is wrapped as PEFT does: the original is kept frozen as `original_module`
    /// and a trainable copy is used as `modules_to_save.&lt;adapter&gt;`. Any other module (SAM's mask
    /// decoder, whose forward takes several inputs; a composite head) is trained in place, as plain
    /// requires_grad: no copy, so disabling, deleting or unloading the adapter keeps its trained
    /// weights, and only one adapter may train it. Both are saved alike, `base_model.model.&lt;path&gt;.&lt;param&gt;`.
    public IReadOnlyList<string> ModulesToSave { get; init; } = Array.Empty<string>();

    /// Checks what can be checked without a model; throws ArgumentException naming the field.
    public void Validate()
    {
        var errors = new List<string>();
        Check(errors);
        foreach (var p in Patterns())
            if (string.IsNullOrWhiteSpace(p)) errors.Add("a module pattern is empty");
            else if (ModulePattern.IsRegex(p))
                try { _ = Lora.Core.IO.SafeRegex.Create("^(?:" + p[3..] + ")$"); }
                catch (ArgumentException e) { errors.Add($"pattern '{p}' is not a valid regular expression: {e.Message}"); }
        if (errors.Count > 0) throw new ArgumentException("invalid tuning configuration: " + string.Join("; ", errors));
    }

    /// One line saying what the configuration tunes ("LoRA r=2 alpha=4 on fc1, fc2, training head").
    public string Describe()
    {
        var what = DescribeMethod();
        if (Targets.Count > 0) what += $" on {string.Join(", ", Targets)}";
        if (ModulesToSave.Count > 0) what += $", training {string.Join(", ", ModulesToSave)}";
        if (Bias != BiasMode.None) what += $", bias {(Bias == BiasMode.All ? "all" : "lora_only")}";
        return what;
    }

    /// The method and its sizes ("LoRA r=2 alpha=4").
    protected abstract string DescribeMethod();

    protected static string F(double x) => x.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture);

    /// The method's own checks (each problem one message naming the field).
    protected abstract void Check(List<string> errors);

    /// Every module pattern of the configuration (checked for being non-empty and valid).
    protected virtual IEnumerable<string> Patterns() => Targets.Concat(ModulesToSave);
}

/// Matching of module patterns against dotted paths (see <see cref="TuningConfig"/>).
public static class ModulePattern
{
    public static bool IsRegex(string pattern) => pattern.StartsWith("re:", StringComparison.Ordinal);

    public static bool Matches(string pattern, string path) =>
        IsRegex(pattern)
            ? Lora.Core.IO.SafeRegex.IsMatch("^(?:" + pattern[3..] + ")$", path)
            : path == pattern || path.EndsWith("." + pattern, StringComparison.Ordinal);

    /// The value of the first pattern matching the path, or the fallback (PEFT's rank/alpha_pattern).
    public static T FirstMatch<T>(IReadOnlyDictionary<string, T> patterns, string path, T fallback) =>
        patterns.FirstOrDefault(kv => Matches(kv.Key, path)) is { Key: not null } kv ? kv.Value : fallback;
}
