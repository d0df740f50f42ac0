using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaLoRA's rank allocator and orthogonal regulariser, as PEFT's RankAllocator and
/// AdaLoraModel.update_and_allocate/forward. Attached to the tuned model's root as an
/// <see cref="IStepHook"/>, so the training loop runs it. Scores are pooled over all layers (one
/// global budget); the budget falls on a cubic schedule from InitRank·layers to TargetRank·layers
/// between TInit and TotalStep − TFinal; each DeltaT steps the lowest-scoring E entries are zeroed.
public sealed class RankAllocator : IStatefulStepHook
{
    readonly IReadOnlyList<(string Path, AdaLoraLinear Layer)> layers;
    readonly string adapter;
    readonly TuningConfig config;
    // The EMAs per parameter ("<path>.lora_A" …), owned by the allocator: detached from any dispose
    // scope, so a caller may wrap a step in one; an entry is disposed when replaced.
    readonly Dictionary<string, (Tensor avgIpt, Tensor avgUnc)> scores = new();
    // The kept ranks per layer as bool tensors on the layer's device (owned): no step reads them
    // back to the host, so allocation does not stall a GPU (PEFT reads the threshold and every
    // layer's pattern with .item()/.tolist()); RankPattern copies them out when asked.
    Dictionary<string, Tensor>? keep;
    // Numbers used in tensor ops are held as Scalars for the allocator's lifetime: a temporary
    // Scalar (from `t * 0.85`) may be finalized by the GC while the native op still reads it.
    readonly Scalar beta1, beta2, oneMinusBeta1, oneMinusBeta2;
    static readonly Scalar Zero = 0.0.ToScalar();

    public RankAllocator(IReadOnlyList<(string Path, AdaLoraLinear Layer)> layers, string adapter, TuningConfig config)
    {
        this.layers = layers;
        this.adapter = adapter;
        this.config = config;
        beta1 = config.Beta1.ToScalar();
        beta2 = config.Beta2.ToScalar();
        oneMinusBeta1 = (1 - config.Beta1).ToScalar();
        oneMinusBeta2 = (1 - config.Beta2).ToScalar();
        TotalStep = config.TotalStep;
        InitialBudget = layers.Sum(l => (int)l.Layer.A(adapter).shape[0]);
        TargetBudget = config.TargetRank * layers.Count;
    }

    public long TotalStep { get; private set; }
    /// The global step of the last <see cref="AfterOptimizerStep"/> (0 before any).
    public long Step { get; private set; }
    public int InitialBudget { get; }
    public int TargetBudget { get; }

    /// The kept ranks per layer path (true = kept) after the last allocation, or null before any.
    public IReadOnlyDictionary<string, bool[]>? RankPattern =>
        keep?.ToDictionary(kv => kv.Key, kv => { using var c = kv.Value.cpu(); return c.data<bool>().ToArray(); });

    public void Begin(long totalSteps)
    {
        if (config.TotalStep <= 0) TotalStep = totalSteps;
        if (TotalStep - config.TFinal <= config.TInit)
            throw new ArgumentException($"AdaLoRA needs TotalStep ({TotalStep}) > TInit ({config.TInit}) + TFinal ({config.TFinal}) so that the budget has steps to shrink over");
    }

    /// PEFT's budget_schedule: (budget, whether to mask at this step).
    public (int Budget, bool Mask) BudgetSchedule(long step)
    {
        long tinit = config.TInit, tfinal = config.TFinal;
        if (step <= tinit) return (InitialBudget, false);
        if (step > TotalStep - tfinal) return (TargetBudget, true);
        var mul = 1.0 - (double)(step - tinit) / (TotalStep - tfinal - tinit);
        var budget = (int)((InitialBudget - TargetBudget) * mul * mul * mul + TargetBudget);
        return (budget, step % config.DeltaT == 0);
    }

    IEnumerable<(string Key, Tensor Value)> Triplet(string path, AdaLoraLinear l) =>
        new[] { (path + ".lora_A", (Tensor)l.A(adapter)), (path + ".lora_E", l.E(adapter)), (path + ".lora_B", l.B(adapter)) };

    /// orth_reg_weight · mean over every A and B of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F.
    public Tensor? ExtraLoss()
    {
        if (layers.Count == 0) return null;
        Tensor? sum = null;
        var n = 0;
        foreach (var (_, l) in layers)
        {
            foreach (var (p, isA) in new[] { (l.A(adapter), true), (l.B(adapter), false) })
            {
                if (p.numel() == 0) continue;
                using var cov = isA ? p.matmul(p.t()) : p.t().matmul(p);
                using var eye = torch.eye(cov.shape[0], cov.shape[1], dtype: cov.dtype, device: cov.device);
                using var diff = cov - eye;
                var norm = diff.norm();
                if (sum is null) sum = norm;
                else { var s = sum + norm; sum.Dispose(); norm.Dispose(); sum = s; }
                n++;
            }
        }
        if (sum is null) return null;
        using var weight = (config.OrthRegWeight / n).ToScalar();
        var r = sum * weight;
        sum.Dispose();
        return r;
    }

    public void AfterOptimizerStep(long globalStep)
    {
        if (TotalStep <= 0) throw new InvalidOperationException("AdaLoRA's rank allocator needs the total step count: set TuningConfig.TotalStep or call Begin(totalSteps) first");
        var end = TotalStep - config.TFinal;
        Step = globalStep;
        if (globalStep < end)
        {
            UpdateImportance();
            var (budget, mask) = BudgetSchedule(globalStep);
            if (mask) MaskToBudget(budget);
        }
        else if (globalStep == end)
        {
            UpdateImportance();
            MaskToBudget(BudgetSchedule(globalStep).Budget);
            ClearScores();
        }
        else if (keep is not null) MaskUsingRankPattern(keep);
    }

    void UpdateImportance()
    {
        using var _ = torch.no_grad();
        foreach (var (path, l) in layers)
            foreach (var (key, p) in Triplet(path, l))
            {
                using var scope = torch.NewDisposeScope();
                if (!scores.TryGetValue(key, out var s)) s = (torch.zeros_like(p), torch.zeros_like(p));
                var grad = p.grad;
                var ipt = grad is null ? torch.zeros_like(p) : (p * grad).abs();
                var avgIpt = (s.avgIpt * beta1 + ipt * oneMinusBeta1).DetachFromDisposeScope();
                var avgUnc = (s.avgUnc * beta2 + (ipt - avgIpt).abs() * oneMinusBeta2).DetachFromDisposeScope();
                s.avgIpt.Dispose(); s.avgUnc.Dispose();
                scores[key] = (avgIpt, avgUnc);
            }
    }

    void ClearScores()
    {
        foreach (var (a, u) in scores.Values) { a.Dispose(); u.Dispose(); }
        scores.Clear();
    }

    Tensor ElementScore(string key, Tensor p, Func<Tensor, Tensor> shape) =>
        scores.TryGetValue(key, out var s) ? shape(s.avgIpt * s.avgUnc) : shape(torch.zeros_like(p));

    /// The triplet scores of one layer: E score + mean A-row score + mean B-column score (r entries).
    public Tensor TripletScores(AdaLoraLinear l) =>
        TripletScores(layers.FirstOrDefault(x => ReferenceEquals(x.Layer, l)).Path
                      ?? throw new ArgumentException("the layer is not one of this allocator's"), l);

    Tensor TripletScores(string path, AdaLoraLinear l)
    {
        using var scope = torch.NewDisposeScope();
        var e = ElementScore(path + ".lora_E", l.E(adapter), t => t.view(-1));
        var a = ElementScore(path + ".lora_A", l.A(adapter), t => t.mean(new long[] { 1 }));
        var b = ElementScore(path + ".lora_B", l.B(adapter), t => t.mean(new long[] { 0 }));
        return (e + a + b).MoveToOuterDisposeScope();
    }

    /// Zeroes the E entries whose triplet score is at or below the k-th smallest (k = initial budget −
    /// budget) and keeps the resulting pattern; the threshold stays on the device.
    void MaskToBudget(int budget)
    {
        using var scope = torch.NewDisposeScope();
        var perLayer = layers.Select(l => TripletScores(l.Path, l.Layer)).ToList();
        var k = InitialBudget - budget;
        var threshold = k <= 0 ? null : torch.cat(perLayer).kthvalue(k, 0, false).values;
        var masks = new Dictionary<string, Tensor>();
        using var _ = torch.no_grad();
        for (var i = 0; i < layers.Count; i++)
        {
            var (path, l) = layers[i];
            var drop = threshold is null ? torch.zeros_like(perLayer[i], dtype: ScalarType.Bool) : perLayer[i].le(threshold);
            l.E(adapter).masked_fill_(drop.view(-1, 1), Zero);
            masks[path] = drop.logical_not().DetachFromDisposeScope();
        }
        Keep(masks);
    }

    void Keep(Dictionary<string, Tensor>? masks)
    {
        if (keep is not null) foreach (var t in keep.Values) t.Dispose();
        keep = masks;
    }

    void MaskUsingRankPattern(IReadOnlyDictionary<string, Tensor> pattern)
    {
        using var _ = torch.no_grad();
        foreach (var (path, l) in layers)
        {
            if (!pattern.TryGetValue(path, out var kept)) continue;
            using var drop = kept.logical_not();
            l.E(adapter).masked_fill_(drop.view(-1, 1), Zero);
        }
    }

    // ---- checkpoint state (IStatefulStepHook) -------------------------------------------------

    /// The EMAs (`ipt.&lt;path&gt;.lora_X`, `unc.…`), the kept ranks (`pattern.&lt;path&gt;`, bool) and
    /// the last step (`step`). The EMAs are the allocator's own tensors (read, not to be disposed);
    /// the others are new and belong to the caller's dispose scope.
    public IEnumerable<(string Name, Tensor Value)> StateTensors()
    {
        foreach (var (key, (ipt, unc)) in scores)
        {
            yield return ("ipt." + key, ipt);
            yield return ("unc." + key, unc);
        }
        if (keep is not null)
            foreach (var (path, mask) in keep) yield return ("pattern." + path, mask.clone().cpu());
        yield return ("step", torch.tensor(Step));
    }

    /// Restores what <see cref="StateTensors"/> wrote (copies: the caller may dispose the inputs).
    public void LoadState(IReadOnlyDictionary<string, Tensor> tensors)
    {
        ClearScores();
        Keep(null);
        using var _ = torch.no_grad();
        foreach (var (path, l) in layers)
            foreach (var (key, p) in Triplet(path, l))
            {
                var hasIpt = tensors.TryGetValue("ipt." + key, out var ipt);
                var hasUnc = tensors.TryGetValue("unc." + key, out var unc);
                if (hasIpt != hasUnc)
                    throw new InvalidDataException($"AdaLoRA state for '{key}' has only one of its two averages; the checkpoint is damaged, delete it to start over.");
                if (ipt is null || unc is null) continue;
                if (!ipt.shape.SequenceEqual(p.shape) || !unc.shape.SequenceEqual(p.shape))
                    throw new InvalidDataException($"AdaLoRA state for '{key}' has shape [{string.Join(",", ipt.shape)}], the parameter's is [{string.Join(",", p.shape)}]; was the checkpoint written for another model or rank?");
                scores[key] = (Own(ipt, p), Own(unc, p));
            }
        foreach (var (path, l) in layers)
            if (tensors.TryGetValue("pattern." + path, out var kept))
            {
                if (kept.dtype != ScalarType.Bool || kept.numel() != l.E(adapter).shape[0])
                    throw new InvalidDataException($"AdaLoRA rank pattern for '{path}' is not {l.E(adapter).shape[0]} booleans; the checkpoint does not fit this model.");
                (keep ??= new())[path] = kept.to(l.E(adapter).device).reshape(-1).clone();
            }
        Step = tensors.TryGetValue("step", out var step) ? step.item<long>() : 0;
    }

    static Tensor Own(Tensor saved, Tensor like)
    {
        using var scope = torch.NewDisposeScope();
        return saved.to(like.dtype, like.device).clone().DetachFromDisposeScope();
    }
}
