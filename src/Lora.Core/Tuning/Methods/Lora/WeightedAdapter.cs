using Lora.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// How <see cref="WeightedAdapter.AddWeightedAdapter"/> combines LoRA adapters (PEFT's combination_type).
public enum Combination
{
    /// Rank Σrᵢ: A = cat(wᵢ·sᵢ·Aᵢ), B = cat(Bᵢ); ΔW = Σ wᵢ·ΔWᵢ exactly.
    Cat,
    /// Same ranks required: A = Σ √(wᵢ·sᵢ)·Aᵢ, B = Σ √(wᵢ·sᵢ)·Bᵢ (PEFT's 'linear', its task arithmetic
    /// with weights √(wᵢ·sᵢ); not ΣwᵢΔWᵢ in general, and wᵢ·sᵢ must not be negative).
    Linear,
    /// Rank svdRank (default: the largest source r): the truncated SVD U·S·Vᴴ of Σ wᵢ·sᵢ·ΔWᵢ, B = U·S,
    /// A = Vᴴ, optionally clamped (PEFT's 'svd'). ΔWᵢ already holds sᵢ, so each source counts with
    /// wᵢ·sᵢ² on Bᵢ·Aᵢ, as in PEFT; with alpha = r the result is the best rank-k approximation of Σ wᵢ·ΔWᵢ.
    Svd,
}

/// PEFT's add_weighted_adapter, for plain LoRA adapters (Linear and ungrouped Conv2d layers).
public static class WeightedAdapter
{
    /// Adds <paramref name="newName"/> = the weighted combination of LoRA adapters, as PEFT's
    /// add_weighted_adapter(adapters, weights, adapter_name, combination_type, svd_rank, svd_clamp):
    /// the new adapter has alpha = rank (scaling 1) and rsLoRA off; one source adapter is always
    /// combined as 'linear' (PEFT does the same). Layers where a source adapter is absent take the
    /// others. The new adapter has no copy of the modules to save (the base modules serve, as PEFT's
    /// fresh copy of them would) unless <paramref name="modulesToSaveFrom"/> names a source adapter
    /// whose trained copies it takes.
    public static void AddWeightedAdapter(this TunedModel model, IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string newName,
                                          Combination combination = Combination.Cat, int? svdRank = null, double? svdClamp = null, string? modulesToSaveFrom = null)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count) throw new ArgumentException($"give one weight per adapter, and at least one adapter (got {adapters.Count} adapter(s), {weights.Count} weight(s))");
        if (string.IsNullOrWhiteSpace(newName) || newName.Contains('.')) throw new ArgumentException($"adapter name '{newName}' must be non-empty and contain no '.'");
        var configs = model.Configs;
        if (configs.ContainsKey(newName)) throw new ArgumentException($"the model already has an adapter named '{newName}'");
        foreach (var a in adapters)
            if (Refusal(configs, a) is { } why) throw new ArgumentException(why);
        if (adapters.Distinct().Count() != adapters.Count) throw new ArgumentException($"an adapter is named twice in [{string.Join(", ", adapters)}]");
        if (weights.Any(w => !double.IsFinite(w))) throw new ArgumentException($"weights must be finite numbers, got [{string.Join(", ", weights)}]");
        if (svdRank is { } sr && (combination != Combination.Svd || sr <= 0)) throw new ArgumentException($"svd rank {sr}: give a positive rank, and only with the 'svd' combination");
        if (svdClamp is { } q && (combination != Combination.Svd || !(q is >= 0 and <= 1))) throw new ArgumentException($"svd clamp {q}: a quantile in [0, 1], only with the 'svd' combination");
        if (modulesToSaveFrom is not null && !adapters.Contains(modulesToSaveFrom)) throw new ArgumentException($"modules to save from '{modulesToSaveFrom}': not one of the combined adapters");
        if (adapters.Count == 1) combination = Combination.Linear;

        var layers = model.Layers.Where(l => adapters.Any(a => l.Layer.AdapterNames.Contains(a))).Select(l => (l.Path, Layer: (ILoraLayer)l.Layer)).ToList();
        if (layers.Count == 0) throw new ArgumentException($"no layer holds any of [{string.Join(", ", adapters)}]");
        var first = (LoraConfig)configs[adapters[0]];
        // PEFT: the new rank is svd_rank, else the largest r of the source configs
        var svdNewRank = svdRank ?? adapters.Max(a => ((LoraConfig)configs[a]).Rank);
        // every layer's factors first: a refusal on one layer leaves the model as it was
        var built = new List<(string Path, ILoraLayer Layer, Tensor A, Tensor B)>();
        try
        {
            foreach (var (path, l) in layers)
            {
                if (l.CannotCombine is { } why) throw new ArgumentException($"'{path}' cannot take a weighted combination ({why})");
                var present = adapters.Select((a, i) => (a, w: weights[i])).Where(x => l.AdapterNames.Contains(x.a)).ToList();
                var (newA, newB) = combination switch
                {
                    Combination.Cat => Cat(l, present),
                    Combination.Linear => Linear(l, path, present),
                    _ => Svd(l, path, present, svdNewRank, svdClamp),
                };
                built.Add((path, l, newA, newB));
            }
            foreach (var (_, l, newA, newB) in built)
            {
                var rank = (int)newA.shape[0];
                l.AddAdapter(newName, new LoraOptions(rank, rank, first.Dropout));
                using var _ = torch.no_grad();
                l.WeightA(newName).copy_(newA);
                l.WeightB(newName).copy_(newB);
            }
        }
        finally
        {
            foreach (var b in built) { b.A.Dispose(); b.B.Dispose(); }
        }
        var ranks = built.ToDictionary(b => b.Path, b => (int)b.Layer.Options(newName).Rank);
        IReadOnlyList<string> modulesToSave = Array.Empty<string>();
        if (modulesToSaveFrom is not null)
        {
            foreach (var (_, w) in model.SavedModules.Where(s => s.Wrapper.AdapterNames.Contains(modulesToSaveFrom)))
            {
                w.AddAdapter(newName);
                using var _ = torch.no_grad();
                var from = w.Copy(modulesToSaveFrom).parameters().ToList();
                foreach (var (to, p) in w.Copy(newName).parameters().Zip(from)) to.copy_(p);
            }
            modulesToSave = configs[modulesToSaveFrom].ModulesToSave;
        }
        // Per-layer ranks (and alpha = rank) as exact-path patterns, so a checkpoint describes every layer.
        var r0 = ranks.Values.GroupBy(r => r).OrderByDescending(g => g.Count()).First().Key;
        model.AddBuilt(newName, first with
        {
            Targets = ranks.Keys.ToList(), Rank = r0, Alpha = r0, UseRsLora = false, ModulesToSave = modulesToSave,
            RankPattern = ranks.Where(kv => kv.Value != r0).ToDictionary(kv => kv.Key, kv => kv.Value),
            AlphaPattern = ranks.Where(kv => kv.Value != r0).ToDictionary(kv => kv.Key, kv => (double)kv.Value),
        });
    }

    /// Why an adapter cannot be a source of a combination (null: it can).
    static string? Refusal(IReadOnlyDictionary<string, TuningConfig> configs, string adapter) => configs.GetValueOrDefault(adapter) switch
    {
        null => $"no adapter named '{adapter}' (have: {string.Join(", ", configs.Keys)})",
        AdaLoraConfig => $"'{adapter}' is an AdaLoRA adapter: AdaLoRA adapters cannot be combined (PEFT's AdaLoraModel refuses add_weighted_adapter too); merge it alone",
        LoraConfig { Variant: DoraVariant } => $"'{adapter}' is a DoRA adapter: its magnitude vector has no weighted combination, so DoRA adapters cannot be combined; merge it alone",
        LoraConfig { Variant: PlainLora } => null,
        var c => $"'{adapter}' is a {c.Method.NameOf(c)} adapter: only LoRA adapters can be combined",
    };

    /// The factor scaled by a number, the number held in a Scalar until the op returns: a temporary
    /// one (from `t * 0.5`) may be finalized by the GC while the native op still reads it.
    static Tensor Scaled(Tensor t, double factor) { using var f = factor.ToScalar(); return t.detach() * f; }

    static (Tensor A, Tensor B) Cat(ILoraLayer l, List<(string a, double w)> present)
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.cat(present.Select(x => Scaled(l.WeightA(x.a), x.w * l.Scaling(x.a))).ToList(), 0);
        var b = torch.cat(present.Select(x => l.WeightB(x.a).detach()).ToList(), 1);
        return (a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope());
    }

    static (Tensor A, Tensor B) Linear(ILoraLayer l, string path, List<(string a, double w)> present)
    {
        if (present.Select(x => l.Options(x.a).Rank).Distinct().Count() != 1)
            throw new ArgumentException($"'linear' combination needs the same rank of every adapter on '{path}' (got {string.Join(", ", present.Select(x => $"{x.a}: {l.Options(x.a).Rank}"))}); use 'cat' or 'svd'");
        foreach (var (a, w) in present)
            if (w * l.Scaling(a) < 0)
                throw new ArgumentException($"'linear' combination takes √(weight·scaling), so weight {w} of '{a}' must not be negative; use 'cat' or 'svd'");
        using var scope = torch.NewDisposeScope();
        // PEFT: valid_weights = √(weight · scaling), on A and on B alike
        var newA = present.Select(x => Scaled(l.WeightA(x.a), Math.Sqrt(x.w * l.Scaling(x.a)))).Aggregate((p, q) => p.Plus(q));
        var newB = present.Select(x => Scaled(l.WeightB(x.a), Math.Sqrt(x.w * l.Scaling(x.a)))).Aggregate((p, q) => p.Plus(q));
        return (newA.MoveToOuterDisposeScope(), newB.MoveToOuterDisposeScope());
    }

    /// PEFT's _svd_generalized_task_arithmetic_weighted_adapter with 'svd': ΔW = Σ wᵢ·sᵢ·ΔWᵢ (a Conv2d's
    /// flattened to out × in·kh·kw), U·S·Vᴴ truncated to the new rank, B = U·S, A = Vᴴ; with a clamp
    /// q both are clamped to ±(the q-quantile of their entries together). Computed in float64.
    static (Tensor A, Tensor B) Svd(ILoraLayer l, string path, List<(string a, double w)> present, int rank, double? clamp)
    {
        using var scope = torch.NewDisposeScope();
        var layer = (TunerLayer)l;
        var shapeA = l.WeightA(present[0].a).shape;
        var shapeB = l.WeightB(present[0].a).shape;
        var delta = present.Select(x => Scaled(layer.DeltaWeight(x.a).to(ScalarType.Float64), x.w * l.Scaling(x.a))).Aggregate((p, q) => p.Plus(q));
        var outDim = delta.shape[0];
        var matrix = delta.reshape(outDim, -1);
        var most = Math.Min(matrix.shape[0], matrix.shape[1]);
        if (rank > most) throw new ArgumentException($"svd rank {rank} is larger than '{path}' allows (min(out, in) = {most}); give a smaller svd rank");
        var (u, s, vh) = torch.linalg.svd(matrix, fullMatrices: false);
        var b = u[.., ..rank] * s[..rank].unsqueeze(0);   // U · diag(S)
        var a = vh[..rank, ..];
        if (clamp is { } q)
        {
            var hi = torch.cat([b.flatten(), a.flatten()]).quantile(torch.tensor(q, ScalarType.Float64)).item<double>();
            using var lo = (-hi).ToScalar();
            using var up = hi.ToScalar();
            b = b.clamp(lo, up);
            a = a.clamp(lo, up);
        }
        var newB = shapeB.Length == 4 ? b.reshape(shapeB[0], rank, 1, 1) : b;
        var newA = shapeA.Length == 4 ? a.reshape(rank, shapeA[1], shapeA[2], shapeA[3]) : a;
        return (newA.MoveToOuterDisposeScope(), newB.MoveToOuterDisposeScope());
    }
}
