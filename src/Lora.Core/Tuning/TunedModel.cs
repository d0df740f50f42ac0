using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A model with tuning adapters in it (changed in place), and the operations PEFT offers on it:
/// several named adapters, switching, disabling, merging, unloading, summaries, checkpoints.
public sealed class TunedModel
{
    readonly Dictionary<string, TuningConfig> configs = new();
    readonly Dictionary<string, AttachedAdapter> attached = new();
    readonly Dictionary<string, IReadOnlyList<string>> inPlace = new();
    string? active;
    bool disabled;

    internal TunedModel(nn.Module model) => Model = model;

    /// The model itself (its tuned children replaced in place).
    public nn.Module Model { get; }

    public IReadOnlyDictionary<string, TuningConfig> Configs => configs;

    /// The adapter in use (null when none).
    public string? ActiveAdapter => active;

    public bool AdaptersDisabled => disabled;

    /// Every tuning layer with its dotted path.
    public IReadOnlyList<(string Path, TunerLayer Layer)> Layers =>
        ModuleTree.Descendants(Model).Where(m => m.Module is TunerLayer).Select(m => (m.Path, (TunerLayer)m.Module)).ToList();

    public IReadOnlyList<(string Path, ModulesToSaveWrapper Wrapper)> SavedModules =>
        ModuleTree.Descendants(Model).Where(m => m.Module is ModulesToSaveWrapper).Select(m => (m.Path, (ModulesToSaveWrapper)m.Module)).ToList();

    /// The modules to save of an adapter that are trained in place (no wrapper could stand in for them).
    public IReadOnlyList<string> TrainedInPlace(string adapter = "default") => inPlace.GetValueOrDefault(adapter) ?? Array.Empty<string>();

    /// What the adapter's method attached beside its layers (step hook, adapter modules).
    public AttachedAdapter? Attached(string adapter = "default") => attached.GetValueOrDefault(adapter);

    /// AdaLoRA's allocator for an adapter (attached to <see cref="Model"/> as its step hook).
    public RankAllocator? Allocator(string adapter = "default") => Attached(adapter)?.StepHook as RankAllocator;

    /// The current AdaLoRA rank pattern (layer path → kept ranks): the allocator's latest, else the
    /// one a loaded checkpoint came with; null before any allocation.
    public IReadOnlyDictionary<string, bool[]>? RankPattern(string adapter = "default") => Attached(adapter)?.RankPattern;

    /// Applies a saved rank pattern (AdaLoRA: shrinks its layers to the kept ranks); its step hook
    /// goes, a loaded adapter is for use, not for further allocation.
    internal void ApplyLoadedRankPattern(string adapter, IReadOnlyDictionary<string, bool[]> pattern)
    {
        var a = attached[adapter];
        var hook = a.StepHook;
        a.LoadRankPattern(this, adapter, pattern);
        if (hook is not null && !ReferenceEquals(hook, a.StepHook)) StepHooks.Detach(Model, hook);
        MarkTrainable();
    }

    public void AddAdapter(string name, TuningConfig config)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Contains('.')) throw new ArgumentException($"adapter name '{name}' must be non-empty and contain no '.'");
        if (configs.ContainsKey(name)) throw new ArgumentException($"the model already has an adapter named '{name}'");
        var method = config.Method;
        var report = Tuner.Match(Model, config);
        if (report.Errors.Count > 0) throw new ArgumentException($"cannot apply {method.NameOf(config)} adapter '{name}':\n  " + string.Join("\n  ", report.Errors));
        if (method.OnePerModel is { } onlyOne && configs.Values.Any(c => c.Method == method)) throw new ArgumentException(onlyOne);
        if (Layers.Any(l => l.Layer.Merged)) throw new InvalidOperationException("unmerge the model before adding an adapter");
        foreach (var m in report.TrainedInPlace)
            if (inPlace.FirstOrDefault(kv => kv.Value.Contains(m.Path)) is { Key: not null } other)
                throw new ArgumentException($"'{m.Path}' is already trained in place by adapter '{other.Key}' (only one-tensor layers get a copy per adapter); delete that adapter first");

        method.Inject(Model, name, config, report);
        foreach (var m in report.ModulesToSave)
        {
            var current = ModuleTree.Get(Model, m.Path);
            var wrapper = current as ModulesToSaveWrapper;
            if (wrapper is null)
            {
                wrapper = new ModulesToSaveWrapper((nn.Module<Tensor, Tensor>)current);
                ModuleTree.Replace(Model, m.Path, wrapper);
            }
            wrapper.AddAdapter(name);
        }
        inPlace[name] = report.TrainedInPlace.Select(m => m.Path).ToList();
        var a = method.Attach(this, name, config, report);
        attached[name] = a;
        configs[name] = config;
        if (a.StepHook is { } hook) StepHooks.Attach(Model, hook);
        if (active is null) SetActiveAdapter(name);
        else ApplyState();
    }

    /// Makes <paramref name="name"/> the adapter in use (the others stay in the model, unused and frozen).
    public void SetActiveAdapter(string name)
    {
        if (!configs.ContainsKey(name)) throw new ArgumentException($"no adapter named '{name}' (have: {string.Join(", ", configs.Keys)})");
        active = name;
        disabled = false;
        ApplyState();
    }

    /// Uses the base model alone (merged layers are unmerged first) until <see cref="EnableAdapters"/>;
    /// modules trained in place keep their trained weights.
    public void DisableAdapters() { disabled = true; ApplyState(); }

    public void EnableAdapters() { disabled = false; ApplyState(); }

    /// PEFT's `with model.disable_adapter():` — the base model alone until the scope is disposed,
    /// then the adapters as they were (still disabled if they were before).
    public IDisposable AdaptersDisabledScope()
    {
        var was = disabled;
        DisableAdapters();
        return new Restore(() => { disabled = was; ApplyState(); });
    }

    sealed class Restore(Action undo) : IDisposable
    {
        bool done;
        public void Dispose() { if (!done) { done = true; undo(); } }
    }

    public void DeleteAdapter(string name)
    {
        if (!configs.ContainsKey(name)) throw new ArgumentException($"no adapter named '{name}'");
        foreach (var (path, l) in Layers)
        {
            l.DeleteAdapter(name);
            if (l.AdapterNames.Count == 0) ModuleTree.Replace(Model, path, l.Unload(merge: false));
        }
        configs.Remove(name);
        inPlace.Remove(name);
        if (attached.Remove(name, out var a)) Detach(a);
        foreach (var (path, w) in SavedModules)
        {
            w.DeleteAdapter(name);
            if (w.AdapterNames.Count == 0) ModuleTree.Replace(Model, path, w.original_module);
        }
        if (active == name) active = configs.Keys.FirstOrDefault();
        ApplyState();
    }

    void ApplyState()
    {
        foreach (var (_, l) in Layers)
        {
            l.AdaptersDisabled = disabled;
            var want = active is not null && l.AdapterNames.Contains(active) ? new[] { active } : Array.Empty<string>();
            if (!l.ActiveAdapters.SequenceEqual(want)) l.SetActiveAdapters(want);
        }
        foreach (var (_, w) in SavedModules) { w.ActiveAdapter = active; w.AdaptersDisabled = disabled; }
        foreach (var (name, a) in attached) a.SetActive(!disabled && name == active);
        MarkTrainable();
    }

    /// Freezes everything but the active adapter's parameters, its copies of the modules to save,
    /// and the biases its bias mode names (PEFT's mark_only_lora_as_trainable).
    void MarkTrainable()
    {
        foreach (var p in Model.parameters()) p.requires_grad = false;
        if (active is null) return;
        var c = configs[active];
        foreach (var (_, l) in Layers)
        {
            if (!l.AdapterNames.Contains(active)) continue;
            foreach (var p in l.AdapterParameters(active)) p.requires_grad = true;
            if (c.Bias == BiasMode.LoraOnly)
                foreach (var (n, p) in l.base_layer.named_parameters()) if (n == "bias") p.requires_grad = true;
        }
        foreach (var (_, w) in SavedModules)
            if (w.AdapterNames.Contains(active))
                foreach (var p in w.Copy(active).parameters()) p.requires_grad = true;
        foreach (var path in TrainedInPlace(active))
            foreach (var p in ModuleTree.Get(Model, path).parameters()) p.requires_grad = true;
        foreach (var p in attached[active].Parameters()) p.requires_grad = true;
        if (c.Bias == BiasMode.All)
            foreach (var (n, p) in Model.named_parameters())
                if (n.Split('.').Last() == "bias" && !n.Contains(".original_module.")) p.requires_grad = true;
    }

    /// The parameters an optimiser should see.
    public IEnumerable<Parameter> TrainableParameters() => Model.parameters().Where(p => p.requires_grad);

    void CheckMergeable()
    {
        if (active is not null && configs[active].Method.NotMergeable is { } why) throw new InvalidOperationException(why);
    }

    void Detach(AttachedAdapter a)
    {
        if (a.StepHook is { } hook) StepHooks.Detach(Model, hook);
        a.Detach();
    }

    /// Writes the active adapter into every tuned layer's weight (merging twice is a no-op).
    public void Merge()
    {
        CheckMergeable();
        if (disabled) throw new InvalidOperationException("adapters are disabled: enable them before merging");
        foreach (var (_, l) in Layers) l.Merge();
    }

    /// Restores every tuned layer's weight as it was before merging (a no-op when nothing is merged).
    public void Unmerge()
    {
        foreach (var (_, l) in Layers) l.Unmerge();
    }

    /// Merges the active adapter and puts the original layer types back (Linear, Conv2d; the active
    /// copy of each module to save), so the model has its plain keys again. The adapters are gone.
    public nn.Module MergeAndUnload()
    {
        CheckMergeable();
        if (disabled) throw new InvalidOperationException("adapters are disabled: enable them, or call Unload() to drop them");
        return Remove(merge: true);
    }

    /// Removes every adapter and returns the model with its original layers and weights (modules
    /// trained in place keep what they learned: there is no original of them).
    public nn.Module Unload() => Remove(merge: false);

    nn.Module Remove(bool merge)
    {
        foreach (var (path, l) in Layers) ModuleTree.Replace(Model, path, l.Unload(merge));
        foreach (var (path, w) in SavedModules)
            ModuleTree.Replace(Model, path, merge && active is not null && w.AdapterNames.Contains(active) ? w.Copy(active) : w.original_module);
        foreach (var a in attached.Values) Detach(a);
        attached.Clear(); configs.Clear(); inPlace.Clear();
        active = null;
        foreach (var p in Model.parameters()) p.requires_grad = true;
        Tuner.Forget(Model);
        return Model;
    }

    /// Adds an adapter built outside <see cref="AddAdapter"/> (its layers already hold it), e.g. a
    /// weighted combination of LoRA adapters, and makes the model's state follow.
    internal void AddBuilt(string name, TuningConfig config)
    {
        if (configs.ContainsKey(name)) throw new ArgumentException($"the model already has an adapter named '{name}'");
        configs[name] = config;
        attached[name] = new AttachedAdapter();
        ApplyState();
    }

    /// Parameter counts (total, trainable, per method) and the tuned modules.
    public ParameterSummary Summary() => ParameterSummary.Of(Model, active is null ? null : TrainedInPlace(active));
}
