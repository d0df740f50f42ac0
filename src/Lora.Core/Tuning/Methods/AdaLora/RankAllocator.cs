using Lora.Core.Training;
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
    readonly IReadOnlyList<(string Path, AdaLoraLayer Layer)> layers;
    readonly string adapter;
    readonly AdaLoraConfig config;
    // The importance EMAs of every A, E and B of every layer, in Layout() order, as one flat tensor
    // each (null before the first update): a step updates them with ~10 kernels in all, where PEFT's
    // per-parameter update takes ~10 per parameter (360 for ViT-B's 12 qkv layers), which on a GPU
    // costs AdaLoRA more than its extra FLOPs. Owned by the allocator: detached from any dispose
    // scope, so a caller may wrap a step in one; disposed when replaced.
    Tensor? avgIpt, avgUnc;
    // The kept ranks per layer as bool tensors on the layer's device (owned; views of one flat mask):
    // no step reads them back to the host, so allocation does not stall a GPU (PEFT reads the
    // threshold and every layer's pattern with .item()/.tolist()); RankPattern copies them out when
    // asked. `drop` is their E-shaped complement, made once for the steps after the schedule.
    Dictionary<string, Tensor>? keep;
    Dictionary<string, Tensor>? drop;
    // Numbers used in tensor ops are held as Scalars for the allocator's lifetime: a temporary
    // Scalar (from `t * 0.85`) may be finalized by the GC while the native op still reads it.
    readonly Scalar beta1, beta2, oneMinusBeta1, oneMinusBeta2;
    static readonly Scalar Zero = 0.0.ToScalar();

    public RankAllocator(IReadOnlyList<(string Path, AdaLoraLayer Layer)> layers, string adapter, AdaLoraConfig config)
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

    /// Layers whose A (r×in) and B (out×r) have the same shapes, with where their EMAs start.
    sealed record ShapeGroup(List<int> Layers, long Rank, long In, long Out, long Offset)
    {
        public long Count => Layers.Count;
    }

    /// How the flat EMAs are laid out: shape group by shape group (in order of first appearance), each
    /// as [every layer's A][every layer's E][every layer's B], so that one view covers a group's A's
    /// (and E's, and B's) and its triplet scores take a few kernels whatever the number of layers.
    /// Read afresh each time, as a loaded checkpoint may have replaced the parameters.
    (List<ShapeGroup> Groups, List<(string Key, Tensor P, long Offset)> Parts) Layout()
    {
        var groups = new List<ShapeGroup>();
        var parts = new List<(string, Tensor, long)>();
        long offset = 0;
        foreach (var shape in Enumerable.Range(0, layers.Count).GroupBy(i => (layers[i].Layer.A(adapter).shape[0], layers[i].Layer.A(adapter).shape[1], layers[i].Layer.B(adapter).shape[0])))
        {
            var g = new ShapeGroup(shape.ToList(), shape.Key.Item1, shape.Key.Item2, shape.Key.Item3, offset);
            groups.Add(g);
            foreach (var (suffix, get) in new (string, Func<AdaLoraLayer, Tensor>)[] { (".lora_A", l => l.A(adapter)), (".lora_E", l => l.E(adapter)), (".lora_B", l => l.B(adapter)) })
                foreach (var i in g.Layers)
                {
                    var p = get(layers[i].Layer);
                    parts.Add((layers[i].Path + suffix, p, offset));
                    offset += p.numel();
                }
        }
        return (groups, parts);
    }

    /// orth_reg_weight · mean over every A and B of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F. Factors of one shape
    /// (every layer of one kind) are stacked and done in one batched product, not one per layer.
    public Tensor? ExtraLoss()
    {
        var factors = layers.SelectMany(x => new[] { (P: (Tensor)x.Layer.A(adapter), IsA: true), (P: (Tensor)x.Layer.B(adapter), IsA: false) })
                            .Where(f => f.P.numel() > 0).ToList();
        if (factors.Count == 0) return null;
        using var scope = torch.NewDisposeScope();
        Tensor? sum = null;
        foreach (var group in factors.GroupBy(f => (f.IsA, Rows: f.P.shape[0], Cols: f.P.shape[1])))
        {
            var stack = torch.stack(group.Select(f => f.P).ToList());                 // (L, r, in) or (L, out, r)
            var cov = group.Key.IsA ? stack.bmm(stack.transpose(1, 2)) : stack.transpose(1, 2).bmm(stack);
            var eye = torch.eye(cov.shape[1], cov.shape[2], dtype: cov.dtype, device: cov.device);
            var norms = (cov - eye).flatten(1).norm(1).sum();                         // Σ Frobenius norms
            sum = sum is null ? norms : sum.Plus(norms);
        }
        using var weight = (config.OrthRegWeight / factors.Count).ToScalar();
        return (sum! * weight).MoveToOuterDisposeScope();
    }

    public void AfterOptimizerStep(long globalStep)
    {
        if (TotalStep <= 0) throw new InvalidOperationException("AdaLoRA's rank allocator needs the total step count: set AdaLoraConfig.TotalStep or call Begin(totalSteps) first");
        var end = TotalStep - config.TFinal;
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
        else if (keep is not null) MaskUsingRankPattern();
    }

    /// PEFT's update_ipt over every parameter at once: ipt = |p·∇p|, avg_ipt ← β₁·avg_ipt + (1−β₁)·ipt,
    /// avg_unc ← β₂·avg_unc + (1−β₂)·|ipt − avg_ipt|. A parameter without a gradient counts as ipt 0.
    void UpdateImportance()
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var parts = Layout().Parts;
        if (parts.Count == 0) return;
        var p = torch.cat(parts.Select(x => x.P.reshape(-1)).ToList());
        var g = torch.cat(parts.Select(x => (x.P.grad ?? torch.zeros_like(x.P)).reshape(-1)).ToList());
        var ipt = (p * g).abs();
        var oldIpt = avgIpt is not null && avgIpt.numel() == ipt.numel() ? avgIpt : torch.zeros_like(ipt);
        var oldUnc = avgUnc is not null && avgUnc.numel() == ipt.numel() ? avgUnc : torch.zeros_like(ipt);
        var newIpt = (oldIpt * beta1).Plus(ipt * oneMinusBeta1);
        var newUnc = (oldUnc * beta2).Plus((ipt - newIpt).abs() * oneMinusBeta2);
        ClearScores();
        avgIpt = newIpt.DetachFromDisposeScope();
        avgUnc = newUnc.DetachFromDisposeScope();
    }

    void ClearScores()
    {
        avgIpt?.Dispose(); avgUnc?.Dispose();
        avgIpt = avgUnc = null;
    }

    /// The triplet scores of one layer: E score + mean A-row score + mean B-column score (r entries).
    public Tensor TripletScores(AdaLoraLayer l)
    {
        var i = layers.Select(x => x.Layer).ToList().IndexOf(l);
        if (i < 0) throw new ArgumentException("the layer is not one of this allocator's");
        using var scope = torch.NewDisposeScope();
        return AllTripletScores()[i].MoveToOuterDisposeScope();
    }

    /// Every layer's triplet scores, from one product of the flat EMAs and a few kernels per shape
    /// group (zeros before any update).
    Tensor[] AllTripletScores()
    {
        var (groups, parts) = Layout();
        var size = parts.Sum(x => x.P.numel());
        var score = avgIpt is not null && avgUnc is not null && avgIpt.numel() == size ? avgIpt * avgUnc : null;
        var result = new Tensor[layers.Count];
        foreach (var g in groups)
        {
            Tensor scores;   // (layers, r)
            if (score is null) scores = torch.zeros(g.Count, g.Rank, dtype: parts[0].P.dtype, device: parts[0].P.device);
            else
            {
                long nA = g.Count * g.Rank * g.In, nE = g.Count * g.Rank;
                var a = score.narrow(0, g.Offset, nA).view(g.Count, g.Rank, g.In).mean(new long[] { 2 });
                var e = score.narrow(0, g.Offset + nA, nE).view(g.Count, g.Rank);
                var b = score.narrow(0, g.Offset + nA + nE, g.Count * g.Out * g.Rank).view(g.Count, g.Out, g.Rank).mean(new long[] { 1 });
                scores = e.Plus(a).Plus(b);
            }
            for (var j = 0; j < g.Layers.Count; j++) result[g.Layers[j]] = scores[j];
        }
        return result;
    }

    /// Zeroes the E entries whose triplet score is at or below the k-th smallest (k = initial budget −
    /// budget) and keeps the resulting pattern; the threshold stays on the device.
    void MaskToBudget(int budget)
    {
        using var scope = torch.NewDisposeScope();
        var scores = torch.cat(AllTripletScores());
        var k = InitialBudget - budget;
        var dropAll = k <= 0 ? torch.zeros_like(scores, dtype: ScalarType.Bool) : scores.le(scores.kthvalue(k, 0, false).values);
        var keepAll = dropAll.logical_not();
        var kept = new Dictionary<string, Tensor>();
        using var _ = torch.no_grad();
        long offset = 0;
        foreach (var (path, l) in layers)
        {
            var r = l.E(adapter).shape[0];
            l.E(adapter).masked_fill_(dropAll.narrow(0, offset, r).view(-1, 1), Zero);
            kept[path] = keepAll.narrow(0, offset, r).DetachFromDisposeScope();
            offset += r;
        }
        Keep(kept);
    }

    void Keep(Dictionary<string, Tensor>? kept)
    {
        foreach (var t in (keep?.Values ?? Enumerable.Empty<Tensor>()).Concat(drop?.Values ?? Enumerable.Empty<Tensor>())) t.Dispose();
        keep = kept;
        drop = null;
    }

    /// After the schedule: the kept pattern holds (the optimiser may have moved a masked E entry).
    void MaskUsingRankPattern()
    {
        using var _ = torch.no_grad();
        if (drop is null && keep is not null)
        {
            using var scope = torch.NewDisposeScope();
            drop = keep.ToDictionary(kv => kv.Key, kv => kv.Value.logical_not().view(-1, 1).DetachFromDisposeScope());
        }
        foreach (var (path, l) in layers)
            if (drop!.TryGetValue(path, out var d)) l.E(adapter).masked_fill_(d, Zero);
    }

    // ---- checkpoint state (IStatefulStepHook) -------------------------------------------------

    /// The EMAs (`ipt.&lt;path&gt;.lora_X`, `unc.…`, one per parameter as PEFT keeps them), the kept
    /// ranks (`pattern.&lt;path&gt;`, bool): new tensors (views of the EMAs, copies of the patterns)
    /// that belong to the caller's dispose scope.
    public IEnumerable<(string Name, Tensor Value)> StateTensors()
    {
        if (avgIpt is not null && avgUnc is not null)
            foreach (var (key, p, offset) in Layout().Parts)
            {
                yield return ("ipt." + key, avgIpt.narrow(0, offset, p.numel()).view(p.shape));
                yield return ("unc." + key, avgUnc.narrow(0, offset, p.numel()).view(p.shape));
            }
        if (keep is not null)
            foreach (var (path, mask) in keep) yield return ("pattern." + path, mask.clone().cpu());
    }

    /// Restores what <see cref="StateTensors"/> wrote (copies: the caller may dispose the inputs).
    /// A parameter whose averages are absent starts from zero, as on the first step.
    public void LoadState(IReadOnlyDictionary<string, Tensor> tensors)
    {
        ClearScores();
        Keep(null);
        using var _ = torch.no_grad();
        var parts = Layout().Parts;
        var total = parts.Sum(x => x.P.numel());
        foreach (var (key, p, offset) in parts)
        {
            var hasIpt = tensors.TryGetValue("ipt." + key, out var ipt);
            var hasUnc = tensors.TryGetValue("unc." + key, out var unc);
            if (hasIpt != hasUnc)
                throw new InvalidDataException($"AdaLoRA state for '{key}' has only one of its two averages; the checkpoint is damaged, delete it to start over.");
            if (ipt is null || unc is null) continue;
            if (!ipt.shape.SequenceEqual(p.shape) || !unc.shape.SequenceEqual(p.shape))
                throw new InvalidDataException($"AdaLoRA state for '{key}' has shape [{string.Join(",", ipt.shape)}], the parameter's is [{string.Join(",", p.shape)}]; was the checkpoint written for another model or rank?");
            avgIpt ??= torch.zeros(total, dtype: p.dtype, device: p.device).DetachFromDisposeScope();
            avgUnc ??= torch.zeros(total, dtype: p.dtype, device: p.device).DetachFromDisposeScope();
            avgIpt.narrow(0, offset, p.numel()).copy_(ipt.reshape(-1));
            avgUnc.narrow(0, offset, p.numel()).copy_(unc.reshape(-1));
        }
        Dictionary<string, Tensor>? kept = null;
        foreach (var (path, l) in layers)
            if (tensors.TryGetValue("pattern." + path, out var mask))
            {
                if (mask.dtype != ScalarType.Bool || mask.numel() != l.E(adapter).shape[0])
                    throw new InvalidDataException($"AdaLoRA rank pattern for '{path}' is not {l.E(adapter).shape[0]} booleans; the checkpoint does not fit this model.");
                (kept ??= new())[path] = mask.to(l.E(adapter).device).reshape(-1).clone();
            }
        Keep(kept);
    }
}
