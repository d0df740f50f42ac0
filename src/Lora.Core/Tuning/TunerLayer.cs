using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A layer that wraps a frozen `base_layer` and adds one or more named adapters to its output.
/// Merging writes the active adapters into the base weight; the weight as it was before the first
/// merge is kept, so unmerging restores it bit for bit (no drift from W + ΔW − ΔW).
public abstract class TunerLayer : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public nn.Module<Tensor, Tensor> base_layer;
#pragma warning restore IDE1006

    readonly List<string> active = new();
    readonly List<string> merged = new();
    List<Tensor>? weightBeforeMerge;

    protected TunerLayer(string name, nn.Module<Tensor, Tensor> baseLayer) : base(name) => base_layer = baseLayer;

    /// The method this layer implements, for summaries ("LoRA", "DoRA", "AdaLoRA").
    public abstract string Method { get; }

    /// The tuning method whose layer this is (an adapter of the same method can join it).
    public abstract TuningMethod Owner { get; }

    /// The adapter's tensors under their PEFT keys relative to the layer (`lora_A.weight`,
    /// `lora_magnitude_vector`, `lora_E`), as a checkpoint stores them. keptRanks (AdaLoRA's rank
    /// pattern for this layer, or null) asks for copies sliced to the kept ranks.
    public abstract IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks);

    /// The summary group of one of the layer's own parameters (name relative to the layer, not
    /// under base_layer): the method's name unless the layer says otherwise (DoRA's magnitude).
    public virtual string GroupOf(string parameter) => Method;

    /// Adapter modules that may be stored in the frozen base's reduced precision (MixedPrecision);
    /// the others stay float32 and are cast per forward.
    public virtual IEnumerable<nn.Module> ReducedPrecisionModules() => [];

    /// The weight of the wrapped layer (what merge writes into).
    public abstract Parameter BaseWeight { get; }

    public abstract IReadOnlyList<string> AdapterNames { get; }

    public IReadOnlyList<string> ActiveAdapters => active;

    public IReadOnlyList<string> MergedAdapters => merged;

    public bool Merged => merged.Count > 0;

    /// When true the layer returns the base output alone (after unmerging if needed).
    public bool AdaptersDisabled { get; set; }

    /// ΔW of one adapter, in the base weight's shape and dtype.
    public abstract Tensor DeltaWeight(string adapter);

    /// The adapter's own trainable parameters (what an optimiser of this adapter sees).
    public abstract IEnumerable<Parameter> AdapterParameters(string adapter);

    protected abstract void RemoveAdapterCore(string adapter);

    /// The base output plus one adapter's output, as a new tensor in the base output's dtype.
    protected abstract Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter);

    /// The merged weight for one adapter given the current weight (W + ΔW; DoRA rescales).
    protected virtual Tensor MergedWeight(Tensor weight, string adapter) => weight.Plus(DeltaWeight(adapter));

    /// The base tensors a merge writes into: the weight, and the bias too for the methods that scale
    /// or shift a layer's output ((IA)³, SSF, LN tuning, BitFit). All are kept before the first merge.
    protected virtual IReadOnlyList<Tensor> MergeTargets => [BaseWeight];

    /// The merged values of <see cref="MergeTargets"/> (same order) for one adapter, given their current values.
    protected virtual IReadOnlyList<Tensor> MergedValues(IReadOnlyList<Tensor> current, string adapter) => [MergedWeight(current[0], adapter)];

    public void SetActiveAdapters(IEnumerable<string> adapters)
    {
        var list = adapters.ToList();
        foreach (var a in list)
            if (!AdapterNames.Contains(a)) throw new ArgumentException($"the layer has no adapter named '{a}' (it has: {string.Join(", ", AdapterNames)})");
        if (Merged && !list.SequenceEqual(merged)) Unmerge();
        active.Clear();
        active.AddRange(list);
    }

    public void DeleteAdapter(string adapter)
    {
        if (!AdapterNames.Contains(adapter)) return;
        if (merged.Contains(adapter)) Unmerge();
        active.Remove(adapter);
        RemoveAdapterCore(adapter);
    }

    /// Writes the given (default: active) adapters into the base weight. Adapters already merged are
    /// skipped, so merging twice is a no-op.
    public void Merge(IEnumerable<string>? adapters = null)
    {
        using var _ = torch.no_grad();
        foreach (var a in (adapters ?? active).ToList())
        {
            if (merged.Contains(a)) continue;
            if (!AdapterNames.Contains(a)) throw new ArgumentException($"the layer has no adapter named '{a}'");
            var targets = MergeTargets;
            weightBeforeMerge ??= targets.Select(t => t.detach().clone()).ToList();
            using var scope = torch.NewDisposeScope();
            var values = MergedValues(targets.Select(t => t.detach()).ToList(), a);
            for (var i = 0; i < targets.Count; i++) targets[i].copy_(values[i]);
            merged.Add(a);
        }
    }

    /// Restores the weight saved before the first merge. Unmerging an unmerged layer is a no-op.
    public void Unmerge()
    {
        if (weightBeforeMerge is null) return;
        var targets = MergeTargets;
        using (torch.no_grad())
            for (var i = 0; i < targets.Count; i++) targets[i].copy_(weightBeforeMerge[i]);
        foreach (var t in weightBeforeMerge) t.Dispose();
        weightBeforeMerge = null;
        merged.Clear();
    }

    /// Returns the base layer, with the active adapters merged into it when <paramref name="merge"/>
    /// is true, or with its original weight otherwise.
    public nn.Module<Tensor, Tensor> Unload(bool merge)
    {
        if (merge) Merge(); else Unmerge();
        weightBeforeMerge?.ForEach(t => t.Dispose());
        weightBeforeMerge = null;
        merged.Clear();
        return base_layer;
    }

    public override Tensor forward(Tensor x)
    {
        if (AdaptersDisabled)
        {
            if (Merged) Unmerge();
            return base_layer.forward(x);
        }
        var result = base_layer.forward(x);
        foreach (var a in active)
        {
            if (merged.Contains(a)) continue;
            var sum = AddAdapterOutput(result, x, a);
            result.Dispose();
            result = sum;
        }
        return result;
    }

    /// result + extra in result's dtype: under bf16 training the frozen base computes in bf16 and the
    /// adapter's fp32 weights join it there, so the next frozen layer gets bf16.
    internal static Tensor AddInResultDtype(Tensor result, Tensor extra)
    {
        using var scope = torch.NewDisposeScope();
        if (extra.dtype != result.dtype) extra = extra.to(result.dtype);
        return result.Plus(extra).MoveToOuterDisposeScope();
    }

    /// result + (h · bᵀ) · scale over the flattened leading dimensions, as one addmm: the scale and the
    /// sum happen in the GEMM's epilogue instead of two elementwise passes (and two allocations) over
    /// the output, forward and backward; its backward touches only the small h and b. The scale goes
    /// into addmm's (single-precision) alpha when it is exact there, else into b.
    internal static Tensor AddLowRank(Tensor result, Tensor h, Tensor b, double scale)
    {
        using var scope = torch.NewDisposeScope();
        var alpha = (float)scale;
        if (alpha != scale) { using var s = scale.ToScalar(); b = b.mul(s); alpha = 1f; }
        long rows = result.shape[..^1].Aggregate(1L, (n, d) => n * d); // explicit: h has 0 columns at rank 0
        var sum = result.reshape(rows, result.shape[^1]).addmm(h.reshape(rows, h.shape[^1]), b.t(), 1f, alpha);
        return sum.view(result.shape).MoveToOuterDisposeScope();
    }

    bool registered;

    /// Registers `base_layer` first, then the adapter containers in field order, base classes first,
    /// so state_dict keys come in PEFT's order (base_layer.*, lora_A.*, lora_B.*, ...).
    protected override void RegisterComponents()
    {
        if (registered) return;
        registered = true;
        register_module("base_layer", base_layer);
        var types = new Stack<Type>();
        for (var t = GetType(); t != typeof(TunerLayer); t = t.BaseType!) types.Push(t);
        foreach (var t in types)
            foreach (var f in t.GetFields(System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.DeclaredOnly))
                if (f.GetValue(this) is AdapterSlots slots) register_module(f.Name, slots);
    }

    /// A weight in the dtype of the input it meets, as autocast would: fp32 trainable adapter weights
    /// meet bf16 activations of a frozen bf16 base (the cast is differentiable, so the fp32 weight
    /// gets its gradient). The same tensor when the dtypes already agree.
    internal static Tensor In(Tensor weight, Tensor x) => weight.dtype == x.dtype ? weight : weight.to(x.dtype);

    /// A rank is bounded by the layer before anything is allocated: no rank above min(in, out) adds
    /// expressiveness, and a config's `r: 1048576` would allocate gigabytes for a 64-wide layer. The
    /// bound, in + out, leaves room for any sensible choice.
    protected static void CheckRankFits(int rank, long inFeatures, long outFeatures, string layer)
    {
        if (rank > inFeatures + outFeatures)
            throw new ArgumentException($"rank {rank} is larger than this {layer} can use ({inFeatures} in, {outFeatures} out: at most {inFeatures + outFeatures}); lower r or its rank_pattern entry");
    }

    protected Tensor Dropout(Tensor x, double p) => p > 0 && training ? nn.functional.dropout(x, p, true) : x;

    protected override void Dispose(bool disposing)
    {
        if (disposing) weightBeforeMerge?.ForEach(t => t.Dispose());
        base.Dispose(disposing);
    }
}
