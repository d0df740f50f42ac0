using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A tuning method, as PEFT's tuner contract (tuners_utils.BaseTuner): how it matches and checks
/// its targets, how it wraps a target layer (`_create_and_replace`), what it attaches to the model
/// beside its layers (a step hook, adapter modules), and how it reads and writes its PEFT
/// adapter_config.json. Its configuration record derives from <see cref="TuningConfig"/> and its
/// layers from <see cref="TunerLayer"/>, which report their own PEFT-keyed tensors. Each method is
/// one folder under Tuning/Methods and one line in <see cref="TuningMethods.Registered"/>; the shared
/// code (injection, merging, checkpoints, summaries, mixed precision) never asks which method it has.
public abstract class TuningMethod
{
    /// The name in messages and summaries ("LoRA", "AdaLoRA", "Adapter").
    public abstract string Name { get; }

    /// adapter_config.json's peft_type ("LORA", "ADALORA", ...).
    public abstract string PeftType { get; }

    /// Why a model can carry only one adapter of this method (null: any number).
    public virtual string? OnePerModel => null;

    /// Why the method's adapters cannot be merged into the base weights (null: they can).
    public virtual string? NotMergeable => null;

    public override string ToString() => Name;

    /// Adds the modules the configuration targets to <paramref name="matches"/> (role "target") and
    /// every problem to <paramref name="errors"/>. The default matches the target patterns.
    public virtual void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                     List<ModuleMatch> matches, List<string> errors) =>
        MatchPatterns(model, modules, config, matches, errors);

    /// The default matching: every module a target pattern names.
    protected void MatchPatterns(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                       List<ModuleMatch> matches, List<string> errors)
    {
        foreach (var pattern in config.Targets)
        {
            var hit = modules.Where(m => ModulePattern.Matches(pattern, m.Path)).ToList();
            if (hit.Count == 0) { errors.Add($"target pattern '{pattern}' matches no module of this {model.GetType().Name}{WouldFit(model, modules, config)}"); continue; }
            foreach (var (path, m) in hit)
            {
                if (matches.Any(x => x.Path == path)) continue;
                var inner = m is TunerLayer tl ? tl.base_layer : m;
                matches.Add(new(path, "target", inner.GetType().Name, pattern));
                var check = CheckTarget(path, inner, config);
                if (check is not null) errors.Add(check);
                else if (m is not TunerLayer && ModuleTree.CannotReplace(model, path, typeof(TunerLayer)) is { } why) errors.Add(why);
                if (m is TunerLayer existing && existing.Owner != this)
                    errors.Add($"'{path}' already carries a {existing.Method} layer; a {NameOf(config)} adapter cannot be added beside it");
            }
        }
    }

    /// What a target that matched nothing is told: those of the model family's usual targets
    /// (<see cref="Lora.Core.Models.FamilyTargets"/>, what `lora bench` tunes) that this method accepts here.
    /// A method whose fit is a whole-model property (not one layer's) says it itself.
    protected virtual string WouldFit(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config)
    {
        if (Lora.Core.Models.FamilyTargets.For(model) is not { } family) return "";
        var fit = family.LowRank.Concat(family.All).Distinct()
            .Where(n => modules.Any(m => ModulePattern.Matches(n, m.Path) && CheckTarget(m.Path, m.Module is TunerLayer tl ? tl.base_layer : m.Module, config) is null))
            .ToList();
        return fit.Count > 0
            ? $"; on the {family.Family} family {NameOf(config)} fits targets [{string.Join(", ", fit)}]"
            : $"; none of the {family.Family} family's usual targets ({string.Join(", ", family.All)}) fit {NameOf(config)}";
    }

    /// The target patterns, or with none every module <see cref="CheckTarget"/> accepts outside the
    /// modules to save (BitFit's every bias, LN tuning's every norm, SSF's every layer); `kinds` says
    /// what was looked for when nothing fits.
    protected void MatchTargetsOrAll(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                     List<ModuleMatch> matches, List<string> errors, string kinds)
    {
        if (config.Targets.Count > 0) { MatchPatterns(model, modules, config, matches, errors); return; }
        bool Saved(string path) => config.ModulesToSave.Any(p =>
            ModulePattern.Matches(p, path) || modules.Any(m => path.StartsWith(m.Path + ".", StringComparison.Ordinal) && ModulePattern.Matches(p, m.Path)));
        bool Inside(string path) => modules.Any(m => m.Module is TunerLayer or ModulesToSaveWrapper && path.StartsWith(m.Path + ".", StringComparison.Ordinal));
        foreach (var (path, m) in modules)
        {
            if (path.Length == 0 || Inside(path) || Saved(path)) continue;
            var inner = m is TunerLayer tl ? tl.base_layer : m;
            if (m is TunerLayer other && other.Owner != this) continue;
            if (CheckTarget(path, inner, config) is not null) continue;
            if (m is not TunerLayer && ModuleTree.CannotReplace(model, path, typeof(TunerLayer)) is not null) continue;
            matches.Add(new(path, "target", inner.GetType().Name, ""));
        }
        if (!matches.Any(x => x.Role == "target"))
            errors.Add($"{Name} found no {kinds} in this {model.GetType().Name} to tune");
    }

    /// The name of the configured method ("DoRA" for LoRA's DoRA variant).
    public virtual string NameOf(TuningConfig config) => Name;

    /// Whether the method can tune this (base) module as a target; null when it can, else why not.
    protected virtual string? CheckTarget(string path, nn.Module module, TuningConfig config) => null;

    /// Puts the adapter into every target (PEFT's _create_and_replace): a target that already carries
    /// this method's layer gets one more adapter, any other is wrapped by <see cref="CreateLayer"/>.
    public virtual void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report)
    {
        foreach (var m in report.Targets)
        {
            var current = ModuleTree.Get(model, m.Path);
            var layer = current as TunerLayer ?? CreateLayer(current, m.Path);
            AddAdapter(layer, adapter, config, m.Path);
            if (!ReferenceEquals(layer, current)) ModuleTree.Replace(model, m.Path, layer);
        }
    }

    /// The method's layer around a base module that passed <see cref="CheckTarget"/>.
    protected virtual TunerLayer CreateLayer(nn.Module module, string path) =>
        throw new ArgumentException($"'{path}' ({module.GetType().Name}) cannot be tuned with {Name}");

    /// Adds one adapter to one of the method's layers, with the options resolved for its path.
    protected virtual void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path) { }

    /// What the adapter needs beside its layers (AdaLoRA's rank allocator, bottleneck adapters in
    /// their host blocks); called once the targets and the modules to save are in place.
    public virtual AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report) => new();

    /// Reads the method's configuration (and AdaLoRA's saved rank pattern) from adapter_config.json.
    public abstract (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json);

    /// The adapter_config.json object of a configuration (PEFT's field names), with the rank pattern
    /// the saved tensors were sliced to, if any.
    public abstract JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter);

    /// Whether adapter_config.json files of this peft_type are this method's (its own, and any other
    /// form it saves under a type of its own).
    public virtual bool Reads(string peftType) => peftType == PeftType;

    /// The fields every adapter_config.json starts with.
    protected JsonObject Header() => new()
    {
        ["peft_type"] = PeftType,
        ["task_type"] = null,
        ["base_model_name_or_path"] = null,
        ["inference_mode"] = true,
    };

    /// PEFT's target_modules: a list of names/dotted suffixes, or one regular expression that must
    /// match the whole path; with any regex among the targets, all become one alternation.
    protected static JsonNode? TargetsJson(IReadOnlyList<string> ts) =>
        ts.Count == 0 ? null
        : ts.Any(ModulePattern.IsRegex) ? JsonValue.Create(string.Join("|", ts.Select(t =>
            ModulePattern.IsRegex(t) ? (ts.Count == 1 ? t[3..] : $"(?:{t[3..]})") : $"(?:.*\\.)?{System.Text.RegularExpressions.Regex.Escape(t)}")))
        : new JsonArray(ts.Select(t => (JsonNode?)JsonValue.Create(t)).ToArray());

    protected static JsonNode BiasJson(BiasMode b) => JsonValue.Create(b switch { BiasMode.LoraOnly => "lora_only", BiasMode.All => "all", _ => "none" });

    protected static JsonNode? ListJson(IReadOnlyList<string> xs) =>
        xs.Count == 0 ? null : new JsonArray(xs.Select(t => (JsonNode?)JsonValue.Create(t)).ToArray());
}

/// What a method attached to a model for one adapter, beside its tuning layers.
public class AttachedAdapter
{
    /// Work around each optimisation step (AdaLoRA's allocator), attached to the model's root.
    public virtual IStepHook? StepHook => null;

    /// AdaLoRA's kept ranks per layer path: the allocator's latest or a loaded checkpoint's.
    public virtual IReadOnlyDictionary<string, bool[]>? RankPattern => null;

    /// Applies a saved rank pattern (a loaded checkpoint's); only AdaLoRA has one.
    public virtual void LoadRankPattern(TunedModel model, string adapter, IReadOnlyDictionary<string, bool[]> pattern) =>
        throw new InvalidDataException("rank_pattern with kept ranks applies to AdaLoRA adapters only");

    /// The configuration as a checkpoint saves it (AdaLoRA: the total step the training loop set).
    public virtual TuningConfig ConfigToSave(TuningConfig config) => config;

    /// Turns the attached parts on or off (the adapter became active or inactive, or disabled).
    public virtual void SetActive(bool on) { }

    /// Trainable parameters beside those of the tuning layers.
    public virtual IEnumerable<Parameter> Parameters() => [];

    /// Tensors to save beside the layers', keyed by their path in the model.
    public virtual IEnumerable<(string Key, Tensor Value)> Tensors() => [];

    /// Removes the attached parts from the model (the adapter is deleted or unloaded).
    public virtual void Detach() { }
}

/// The registered tuning methods: adding a method is one folder under Methods/ and one line here.
public static class TuningMethods
{
    public static readonly IReadOnlyList<TuningMethod> Registered =
        [LoraMethod.Instance, AdaLoraMethod.Instance, BottleneckAdapterMethod.Instance,
         BitFitMethod.Instance, LnTuningMethod.Instance, Ia3Method.Instance, SsfMethod.Instance, LoHaMethod.Instance, LoKrMethod.Instance, VeraMethod.Instance, AdaptFormerMethod.Instance, VptMethod.Instance,
         ConvpassMethod.Instance, FactMethod.Instance, OftMethod.Instance, BoftMethod.Instance, HraMethod.Instance];

    /// The method saved under a peft_type, or null.
    public static TuningMethod? ByPeftType(string peftType) => Registered.FirstOrDefault(m => m.Reads(peftType));
}
