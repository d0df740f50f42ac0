using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaLoRA's rank allocator and orthogonal regulariser, as PEFT's RankAllocator and
/// AdaLoraModel.update_and_allocate/forward. Attached to the tuned model's root as an
/// <see cref="IStepHook"/>, so the training loop runs it. Scores are pooled over all layers (one
/// global budget); the budget falls on a cubic schedule from InitRank·layers to TargetRank·layers
/// between TInit and TotalStep − TFinal; each DeltaT steps the lowest-scoring E entries are zeroed.
public sealed class RankAllocator : IStepHook
{
    readonly IReadOnlyList<(string Path, AdaLoraLinear Layer)> layers;
    readonly string adapter;
    readonly TuningConfig config;
    readonly Dictionary<Tensor, (Tensor avgIpt, Tensor avgUnc)> scores = new(ReferenceEqualityComparer.Instance);
    Dictionary<string, bool[]>? rankPattern;

    public RankAllocator(IReadOnlyList<(string Path, AdaLoraLinear Layer)> layers, string adapter, TuningConfig config)
    {
        this.layers = layers;
        this.adapter = adapter;
        this.config = config;
        TotalStep = config.TotalStep;
        InitialBudget = layers.Sum(l => (int)l.Layer.A(adapter).shape[0]);
        TargetBudget = config.TargetRank * layers.Count;
    }

    public long TotalStep { get; private set; }
    public int InitialBudget { get; }
    public int TargetBudget { get; }

    /// The kept ranks per layer path (true = kept) after the last allocation, or null before any.
    public IReadOnlyDictionary<string, bool[]>? RankPattern => rankPattern;

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

    IEnumerable<Tensor> Triplet(AdaLoraLinear l) => new Tensor[] { l.A(adapter), l.E(adapter), l.B(adapter) };

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
        var r = sum * (config.OrthRegWeight / n);
        sum.Dispose();
        return r;
    }

    public void AfterOptimizerStep(long globalStep)
    {
        if (TotalStep <= 0) throw new InvalidOperationException("AdaLoRA's rank allocator needs the total step count: set TuningConfig.TotalStep or call Begin(totalSteps) first");
        var end = TotalStep - config.TFinal;
        if (globalStep < end)
        {
            UpdateImportance();
            var (budget, mask) = BudgetSchedule(globalStep);
            if (mask) rankPattern = MaskToBudget(budget);
        }
        else if (globalStep == end)
        {
            UpdateImportance();
            rankPattern = MaskToBudget(BudgetSchedule(globalStep).Budget);
            foreach (var (a, u) in scores.Values) { a.Dispose(); u.Dispose(); }
            scores.Clear();
        }
        else if (rankPattern is not null) MaskUsingRankPattern(rankPattern);
    }

    void UpdateImportance()
    {
        using var _ = torch.no_grad();
        foreach (var (_, l) in layers)
            foreach (var p in Triplet(l))
            {
                using var scope = torch.NewDisposeScope();
                // the scores outlive the caller's per-step dispose scope: detached, disposed here when replaced
                if (!scores.TryGetValue(p, out var s))
                    s = (torch.zeros_like(p).DetachFromDisposeScope(), torch.zeros_like(p).DetachFromDisposeScope());
                var grad = p.grad;
                var ipt = grad is null ? torch.zeros_like(p) : (p * grad).abs();
                var avgIpt = (s.avgIpt * config.Beta1 + ipt * (1 - config.Beta1)).DetachFromDisposeScope();
                var avgUnc = (s.avgUnc * config.Beta2 + (ipt - avgIpt).abs() * (1 - config.Beta2)).DetachFromDisposeScope();
                s.avgIpt.Dispose(); s.avgUnc.Dispose();
                scores[p] = (avgIpt, avgUnc);
            }
    }

    Tensor ElementScore(Tensor p, Func<Tensor, Tensor> shape) =>
        scores.TryGetValue(p, out var s) ? shape(s.avgIpt * s.avgUnc) : shape(torch.zeros_like(p));

    /// The triplet scores of one layer: E score + mean A-row score + mean B-column score (r entries).
    public Tensor TripletScores(AdaLoraLinear l)
    {
        using var scope = torch.NewDisposeScope();
        var e = ElementScore(l.E(adapter), t => t.view(-1));
        var a = ElementScore(l.A(adapter), t => t.mean(new long[] { 1 }));
        var b = ElementScore(l.B(adapter), t => t.mean(new long[] { 0 }));
        return (e + a + b).MoveToOuterDisposeScope();
    }

    Dictionary<string, bool[]> MaskToBudget(int budget)
    {
        using var scope = torch.NewDisposeScope();
        var perLayer = layers.Select(l => TripletScores(l.Layer)).ToList();
        var k = InitialBudget - budget;
        var threshold = k <= 0 ? double.NegativeInfinity : torch.cat(perLayer).kthvalue(k, 0, false).values.ToDouble();
        var pattern = new Dictionary<string, bool[]>();
        using var _ = torch.no_grad();
        for (var i = 0; i < layers.Count; i++)
        {
            var (path, l) = layers[i];
            var drop = perLayer[i].le(threshold);
            l.E(adapter).masked_fill_(drop.view(-1, 1), 0.0);
            pattern[path] = drop.logical_not().data<bool>().ToArray();
        }
        return pattern;
    }

    void MaskUsingRankPattern(IReadOnlyDictionary<string, bool[]> pattern)
    {
        using var _ = torch.no_grad();
        foreach (var (path, l) in layers)
        {
            if (!pattern.TryGetValue(path, out var keep)) continue;
            using var drop = torch.tensor(keep.Select(x => !x).ToArray(), device: l.E(adapter).device);
            l.E(adapter).masked_fill_(drop.view(-1, 1), 0.0);
        }
    }
}
