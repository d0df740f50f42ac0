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
    /// with weights √(wᵢ·sᵢ); not ΣwᵢΔWᵢ in general).
    Linear,
}

/// PEFT's add_weighted_adapter, for plain LoRA adapters.
public static class WeightedAdapter
{
    /// Adds <paramref name="newName"/> = the weighted combination of LoRA adapters (PEFT's
    /// add_weighted_adapter with 'cat' or 'linear'); the new adapter has alpha = rank (scaling 1).
    public static void AddWeightedAdapter(this TunedModel model, IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string newName, Combination combination = Combination.Cat)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count) throw new ArgumentException("give one weight per adapter, and at least one adapter");
        var configs = model.Configs;
        foreach (var a in adapters)
            if (!configs.TryGetValue(a, out var c) || c is not LoraConfig { Method: LoraMethod, Variant: PlainLora })
                throw new ArgumentException($"'{a}' is not a plain LoRA adapter of this model; only LoRA adapters (not DoRA/AdaLoRA/Adapter) can be combined");
        if (configs.ContainsKey(newName)) throw new ArgumentException($"the model already has an adapter named '{newName}'");
        var layers = model.Layers.Where(l => adapters.Any(a => l.Layer.AdapterNames.Contains(a))).Select(l => (l.Path, Layer: (ILoraLayer)l.Layer)).ToList();
        int RankOf(ILoraLayer l, string a) => l.Options(a).Rank;
        if (combination == Combination.Linear)
            foreach (var (path, l) in layers)
                if (adapters.Select(a => RankOf(l, a)).Distinct().Count() != 1 || adapters.Any(a => !l.AdapterNames.Contains(a)))
                    throw new ArgumentException($"'linear' combination needs every adapter on '{path}' with the same rank; use Combination.Cat");
        var first = (LoraConfig)configs[adapters[0]];
        var ranks = new Dictionary<string, int>();
        foreach (var (path, l) in layers)
        {
            if (l.CannotCombine is { } why) throw new ArgumentException($"'{path}' cannot take a weighted combination ({why})");
            var present = adapters.Select((a, i) => (a, w: weights[i])).Where(x => l.AdapterNames.Contains(x.a)).ToList();
            var rank = combination == Combination.Cat ? present.Sum(x => RankOf(l, x.a)) : RankOf(l, present[0].a);
            var o = new LoraOptions(rank, rank, first.Dropout);
            ranks[path] = rank;
            using var _ = torch.no_grad();
            (Tensor A, Tensor B, double s) Get(string a) => (l.WeightA(a), l.WeightB(a), l.Scaling(a));
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
            l.AddAdapter(newName, o);
            l.WeightA(newName).copy_(newA);
            l.WeightB(newName).copy_(newB);
        }
        // Per-layer ranks (and alpha = rank) as exact-path patterns, so a checkpoint describes every layer.
        var r0 = ranks.Values.GroupBy(r => r).OrderByDescending(g => g.Count()).First().Key;
        model.AddBuilt(newName, first with
        {
            Targets = ranks.Keys.ToList(), Rank = r0, Alpha = r0, UseRsLora = false, ModulesToSave = Array.Empty<string>(),
            RankPattern = ranks.Where(kv => kv.Value != r0).ToDictionary(kv => kv.Key, kv => kv.Value),
            AlphaPattern = ranks.Where(kv => kv.Value != r0).ToDictionary(kv => kv.Key, kv => (double)kv.Value),
        });
    }
}
