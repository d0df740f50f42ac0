using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// How <see cref="TunedModel.AddWeightedAdapter"/> combines LoRA adapters (PEFT's combination_type).
public enum Combination
{
    /// Rank Σrᵢ: A = cat(wᵢ·sᵢ·Aᵢ), B = cat(Bᵢ); ΔW = Σ wᵢ·ΔWᵢ exactly.
    Cat,
    /// Same ranks required: A = Σ √(wᵢ·sᵢ)·Aᵢ, B = Σ √(wᵢ·sᵢ)·Bᵢ (PEFT's 'linear', its task arithmetic
    /// with weights √(wᵢ·sᵢ); not ΣwᵢΔWᵢ in general).
    Linear,
}

/// A model with tuning adapters in it (changed in place), and the operations PEFT offers on it:
/// several named adapters, switching, disabling, merging, unloading, summaries, checkpoints.
public sealed class TunedModel
{
    readonly Dictionary<string, TuningConfig> configs = new();
    readonly Dictionary<string, List<(IAdapterHost Host, BottleneckAdapter Attn, BottleneckAdapter Mlp)>> hostAdapters = new();
    readonly Dictionary<string, RankAllocator> allocators = new();
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

    /// AdaLoRA's allocator for an adapter (attached to <see cref="Model"/> as its step hook).
    public RankAllocator? Allocator(string adapter = "default") => allocators.GetValueOrDefault(adapter);

    readonly Dictionary<string, IReadOnlyDictionary<string, bool[]>> loadedPatterns = new();

    /// The current AdaLoRA rank pattern (layer path → kept ranks): the allocator's latest, else the
    /// one a loaded checkpoint came with; null before any allocation.
    public IReadOnlyDictionary<string, bool[]>? RankPattern(string adapter = "default") =>
        Allocator(adapter)?.RankPattern ?? loadedPatterns.GetValueOrDefault(adapter);

    /// Shrinks AdaLoRA layers to the kept ranks of a saved rank pattern (ranknum keeps the initial
    /// rank, so outputs are those of the masked full-rank adapter), as PEFT's resize_modules_by_rank_pattern.
    internal void ApplyLoadedRankPattern(string adapter, IReadOnlyDictionary<string, bool[]> pattern)
    {
        var layers = Layers.Where(l => l.Layer is AdaLoraLinear a && a.AdapterNames.Contains(adapter)).ToList();
        foreach (var key in pattern.Keys)
            if (!layers.Any(l => l.Path == key)) throw new InvalidDataException($"rank_pattern names '{key}', which is not an AdaLoRA layer of this model");
        foreach (var (path, layer) in layers)
        {
            if (!pattern.TryGetValue(path, out var keep)) continue;
            var a = (AdaLoraLinear)layer;
            if (keep.Length != a.A(adapter).shape[0])
                throw new InvalidDataException($"rank_pattern for '{path}' has {keep.Length} entries but init_r is {a.A(adapter).shape[0]}");
            var r = keep.Count(k => k);
            var w = a.BaseWeight;
            a.SetTriplets(adapter, torch.zeros(r, a.Base.in_features, dtype: w.dtype, device: w.device),
                torch.zeros(r, 1, dtype: w.dtype, device: w.device), torch.zeros(a.Base.out_features, r, dtype: w.dtype, device: w.device));
        }
        loadedPatterns[adapter] = pattern;
        if (allocators.Remove(adapter, out var old)) StepHooks.Detach(Model, old); // a loaded adapter is for use, not for further allocation
        MarkTrainable();
    }

    public void AddAdapter(string name, TuningConfig config)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Contains('.')) throw new ArgumentException($"adapter name '{name}' must be non-empty and contain no '.'");
        if (configs.ContainsKey(name)) throw new ArgumentException($"the model already has an adapter named '{name}'");
        var report = Tuner.Match(Model, config);
        if (report.Errors.Count > 0) throw new ArgumentException($"cannot apply {config.Method} adapter '{name}':\n  " + string.Join("\n  ", report.Errors));
        if (config.Method == TuningMethod.AdaLora && configs.Values.Any(c => c.Method == TuningMethod.AdaLora))
            throw new ArgumentException("a model can carry only one AdaLoRA adapter (its rank allocator works on one budget), as in PEFT");
        if (config.Method == TuningMethod.Adapter && configs.Values.Any(c => c.Method == TuningMethod.Adapter))
            throw new ArgumentException("a model can carry only one set of bottleneck adapters");
        if (Layers.Any(l => l.Layer.Merged)) throw new InvalidOperationException("unmerge the model before adding an adapter");
        foreach (var m in report.TrainedInPlace)
            if (inPlace.FirstOrDefault(kv => kv.Value.Contains(m.Path)) is { Key: not null } other)
                throw new ArgumentException($"'{m.Path}' is already trained in place by adapter '{other.Key}' (only one-tensor layers get a copy per adapter); delete that adapter first");

        foreach (var m in report.Targets)
        {
            var current = ModuleTree.Get(Model, m.Path);
            var layer = current as TunerLayer ?? Wrap(current, config.Method, m.Path);
            var r = Tuner.RankFor(config, m.Path);
            var alpha = Tuner.AlphaFor(config, m.Path);
            switch (layer)
            {
                case AdaLoraLinear a: a.AddAdapter(name, config.InitRank, alpha, config.Dropout); break;
                case LoraLinear l: l.AddAdapter(name, new LoraOptions(r, alpha, config.Dropout, config.UseRsLora, config.InitGaussian, config.Method == TuningMethod.Dora)); break;
                case LoraConv2d c: c.AddAdapter(name, new LoraOptions(r, alpha, config.Dropout, config.UseRsLora, config.InitGaussian, config.Method == TuningMethod.Dora)); break;
            }
            if (!ReferenceEquals(layer, current)) ModuleTree.Replace(Model, m.Path, layer);
        }
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
        if (config.Method == TuningMethod.Adapter)
        {
            var list = new List<(IAdapterHost, BottleneckAdapter, BottleneckAdapter)>();
            foreach (var m in report.AdapterHosts)
            {
                var host = (IAdapterHost)ModuleTree.Get(Model, m.Path);
                var dim = host.AdapterDim ?? InferDim((nn.Module)host, m.Path);
                var w = ((nn.Module)host).parameters().First();
                list.Add((host, new BottleneckAdapter(dim, config.AdapterRatio, config.AdapterInitIdentity, w.dtype, w.device, config.AdapterWidth),
                                new BottleneckAdapter(dim, config.AdapterRatio, config.AdapterInitIdentity, w.dtype, w.device, config.AdapterWidth)));
            }
            hostAdapters[name] = list;
        }
        configs[name] = config;
        if (config.Method == TuningMethod.AdaLora)
        {
            var layers = Layers.Where(l => l.Layer is AdaLoraLinear a && a.AdapterNames.Contains(name)).Select(l => (l.Path, (AdaLoraLinear)l.Layer)).ToList();
            var alloc = new RankAllocator(layers, name, config);
            allocators[name] = alloc;
            StepHooks.Attach(Model, alloc);
        }
        if (active is null) SetActiveAdapter(name);
        else ApplyState();
    }

    static TunerLayer Wrap(nn.Module m, TuningMethod method, string path) => (m, method) switch
    {
        (Linear l, TuningMethod.AdaLora) => new AdaLoraLinear(l),
        (Linear l, _) => new LoraLinear(l),
        (Conv2d c, TuningMethod.Lora or TuningMethod.Dora) => new LoraConv2d(c),
        _ => throw new ArgumentException($"'{path}' ({m.GetType().Name}) cannot be tuned with {method}"),
    };

    static long InferDim(nn.Module host, string path)
    {
        foreach (var (name, child) in host.named_children())
            if (name == "norm1" && child is LayerNorm n) return n.normalized_shape[0];
        foreach (var (_, child) in host.named_modules())
            if (child is Linear l) return l.in_features;
        throw new ArgumentException($"cannot tell the width of adapter host '{path}': implement IAdapterHost.AdapterDim");
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

    public void DeleteAdapter(string name)
    {
        if (!configs.ContainsKey(name)) throw new ArgumentException($"no adapter named '{name}'");
        foreach (var (path, l) in Layers)
        {
            l.DeleteAdapter(name);
            if (l.AdapterNames.Count == 0) ModuleTree.Replace(Model, path, l.Unload(merge: false));
        }
        configs.Remove(name);
        hostAdapters.Remove(name);
        inPlace.Remove(name);
        if (allocators.Remove(name, out var alloc)) StepHooks.Detach(Model, alloc);
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
        foreach (var (name, list) in hostAdapters)
        {
            var on = !disabled && name == active;
            foreach (var (host, attn, mlp) in list)
                host.SetAdapters(on ? attn : null, on ? mlp : null, configs[name].AdapterMlpScale);
        }
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
        if (hostAdapters.TryGetValue(active, out var list))
            foreach (var (_, a, m) in list)
                foreach (var p in a.parameters().Concat(m.parameters())) p.requires_grad = true;
        if (c.Bias == BiasMode.All)
            foreach (var (n, p) in Model.named_parameters())
                if (n.Split('.').Last() == "bias" && !n.Contains(".original_module.")) p.requires_grad = true;
    }

    /// The parameters an optimiser should see.
    public IEnumerable<Parameter> TrainableParameters() => Model.parameters().Where(p => p.requires_grad);

    void CheckMergeable()
    {
        if (active is not null && configs[active].Method == TuningMethod.Adapter)
            throw new InvalidOperationException("bottleneck Adapters are not mergeable: they are non-linear (GELU between two Linears) and add no weight to any base layer; keep the adapted model as it is");
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
        foreach (var list in hostAdapters.Values)
            foreach (var (host, _, _) in list) host.SetAdapters(null, null, 0.5);
        foreach (var a in allocators.Values) StepHooks.Detach(Model, a);
        allocators.Clear(); hostAdapters.Clear(); configs.Clear(); inPlace.Clear();
        active = null;
        foreach (var p in Model.parameters()) p.requires_grad = true;
        Tuner.Forget(Model);
        return Model;
    }

    /// Adds <paramref name="newName"/> = the weighted combination of LoRA adapters (PEFT's
    /// add_weighted_adapter with 'cat' or 'linear'); the new adapter has alpha = rank (scaling 1).
    public void AddWeightedAdapter(IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string newName, Combination combination = Combination.Cat)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count) throw new ArgumentException("give one weight per adapter, and at least one adapter");
        foreach (var a in adapters)
            if (!configs.TryGetValue(a, out var c) || c.Method != TuningMethod.Lora)
                throw new ArgumentException($"'{a}' is not a plain LoRA adapter of this model; only LoRA adapters (not DoRA/AdaLoRA/Adapter) can be combined");
        if (configs.ContainsKey(newName)) throw new ArgumentException($"the model already has an adapter named '{newName}'");
        var layers = Layers.Where(l => adapters.Any(a => l.Layer.AdapterNames.Contains(a))).ToList();
        int RankOf(TunerLayer l, string a) => l switch { LoraLinear x => x.Options(a).Rank, LoraConv2d x => x.Options(a).Rank, _ => 0 };
        if (combination == Combination.Linear)
            foreach (var (path, l) in layers)
                if (adapters.Select(a => RankOf(l, a)).Distinct().Count() != 1 || adapters.Any(a => !l.AdapterNames.Contains(a)))
                    throw new ArgumentException($"'linear' combination needs every adapter on '{path}' with the same rank; use Combination.Cat");
        var first = configs[adapters[0]];
        var ranks = new Dictionary<string, int>();
        foreach (var (path, l) in layers)
        {
            var present = adapters.Select((a, i) => (a, w: weights[i])).Where(x => l.AdapterNames.Contains(x.a)).ToList();
            var rank = combination == Combination.Cat ? present.Sum(x => RankOf(l, x.a)) : RankOf(l, present[0].a);
            var o = new LoraOptions(rank, rank, first.Dropout);
            ranks[path] = rank;
            using var _ = torch.no_grad();
            (Tensor A, Tensor B, double s) Get(string a) => l switch
            {
                LoraLinear x => (x.A(a).weight!, x.B(a).weight!, x.Scaling(a)),
                LoraConv2d x when x.Base.groups == 1 => (x.A(a).weight!, x.B(a).weight!, x.Scaling(a)),
                _ => throw new ArgumentException($"'{path}' cannot take a weighted combination (grouped convolution)"),
            };
            // The factor is held in a Scalar until the op returns: a temporary one (from `t * 0.5`)
            // may be finalized by the GC while the native op still reads it.
            static Tensor Scaled(Tensor t, double factor) { using var f = factor.ToScalar(); return t * f; }
            Tensor newA, newB;
            if (combination == Combination.Cat)
            {
                newA = torch.cat(present.Select(x => { var g = Get(x.a); return Scaled(g.A, x.w * g.s); }).ToList(), 0);
                newB = torch.cat(present.Select(x => Get(x.a).B).ToList(), 1);
            }
            else
            {
                // PEFT: valid_weights = √(weight · scaling), on A and on B alike
                newA = present.Select(x => { var g = Get(x.a); return Scaled(g.A, Math.Sqrt(x.w * g.s)); }).Aggregate((p, q) => p.Plus(q));
                newB = present.Select(x => { var g = Get(x.a); return Scaled(g.B, Math.Sqrt(x.w * g.s)); }).Aggregate((p, q) => p.Plus(q));
            }
            switch (l)
            {
                case LoraLinear x: x.AddAdapter(newName, o); x.A(newName).weight!.copy_(newA); x.B(newName).weight!.copy_(newB); break;
                case LoraConv2d x: x.AddAdapter(newName, o); x.A(newName).weight!.copy_(newA); x.B(newName).weight!.copy_(newB); break;
            }
        }
        // Per-layer ranks (and alpha = rank) as exact-path patterns, so a checkpoint describes every layer.
        var r0 = ranks.Values.GroupBy(r => r).OrderByDescending(g => g.Count()).First().Key;
        configs[newName] = first with
        {
            Targets = ranks.Keys.ToList(), Rank = r0, Alpha = r0, UseRsLora = false, ModulesToSave = Array.Empty<string>(),
            RankPattern = ranks.Where(kv => kv.Value != r0).ToDictionary(kv => kv.Key, kv => kv.Value),
            AlphaPattern = ranks.Where(kv => kv.Value != r0).ToDictionary(kv => kv.Key, kv => (double)kv.Value),
        };
        ApplyState();
    }

    /// Parameter counts (total, trainable, per method) and the tuned modules.
    public ParameterSummary Summary() => ParameterSummary.Of(Model, active is null ? null : TrainedInPlace(active));
}
