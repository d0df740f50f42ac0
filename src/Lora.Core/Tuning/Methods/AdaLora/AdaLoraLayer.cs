using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaLoRA's SVD-form adapter, as PEFT's adalora.AdaLoraLayer: ΔW = B·(A ∘ E)·scaling / (ranknum +
/// 1e-5) with A: r×in, E: r×1, B: out×r, scaling = lora_alpha (or r when alpha is 0) and ranknum
/// the initial rank (a non-trainable parameter, kept when the rank allocator zeroes entries of E).
/// "in" is the flattened input of one output: in_features of a Linear, in_channels·kh·kw of a
/// Conv2d (ΔW is reshaped to the kernel). Keys: `lora_A.&lt;adapter&gt;`, `lora_E.&lt;adapter&gt;`,
/// `lora_B.&lt;adapter&gt;`, `ranknum.&lt;adapter&gt;`. The rank allocator and the orthogonal
/// regulariser see only A, E and B, so they treat Linear and Conv2d layers alike.
public abstract class AdaLoraLayer : TunerLayer
{
#pragma warning disable IDE1006
    public AdapterSlots lora_A = new();
    public AdapterSlots lora_B = new();
    public AdapterSlots lora_E = new();
    public AdapterSlots ranknum = new();
#pragma warning restore IDE1006
    protected readonly Dictionary<string, (double alpha, double dropout)> options = new();
    // Numbers in tensor ops are held as Scalars (static fields, `using` locals) until the op returns:
    // a temporary Scalar (from `t * 2.0`) may be finalized by the GC while native code still reads it.
    protected static readonly Scalar Eps = 1e-5.ToScalar();

    protected AdaLoraLayer(string name, nn.Module<Tensor, Tensor> baseLayer) : base(name, baseLayer) { }

    /// The columns of A: the flattened input of one output of the base layer.
    public abstract long InFeatures { get; }

    /// The rows of B: the base layer's outputs.
    public abstract long OutFeatures { get; }

    /// The base layer's kind, for messages.
    protected abstract string LayerKind { get; }

    public override string Method => "AdaLoRA";
    public override TuningMethod Owner => AdaLoraMethod.Instance;
    public override IReadOnlyList<string> AdapterNames => options.Keys.ToList();
    public Parameter A(string adapter) => lora_A.Parameter(adapter);
    public Parameter B(string adapter) => lora_B.Parameter(adapter);
    public Parameter E(string adapter) => lora_E.Parameter(adapter);
    public Parameter RankNum(string adapter) => ranknum.Parameter(adapter);
    public double Alpha(string adapter) => options[adapter].alpha;
    public double Scaling(string adapter) => options[adapter].alpha > 0 ? options[adapter].alpha : A(adapter).shape[0];

    /// Adds an adapter of rank <paramref name="rank"/> (PEFT's init: A, B ~ N(0, 0.02), E = 0).
    /// <paramref name="ranknum"/> defaults to the rank; a loaded adapter sliced to fewer ranks keeps
    /// the rank it was trained with so that its outputs do not change.
    public void AddAdapter(string adapter, int rank, double alpha, double dropout, int? ranknum = null)
    {
        if (options.ContainsKey(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        if (rank < 0) throw new ArgumentException($"AdaLoRA rank must not be negative, got {rank}");
        CheckRankFits(rank, InFeatures, OutFeatures, LayerKind);
        var w = BaseWeight;
        var a = torch.empty(rank, InFeatures, dtype: w.dtype, device: w.device);
        var b = torch.empty(OutFeatures, rank, dtype: w.dtype, device: w.device);
        var e = torch.zeros(rank, 1, dtype: w.dtype, device: w.device);
        using (torch.no_grad()) { nn.init.normal_(a, 0, 0.02); nn.init.normal_(b, 0, 0.02); }
        lora_A.AddParameter(adapter, new Parameter(a));
        lora_E.AddParameter(adapter, new Parameter(e));
        lora_B.AddParameter(adapter, new Parameter(b));
        using Scalar initialRank = (double)(ranknum ?? rank);
        this.ranknum.AddParameter(adapter, new Parameter(torch.full(1, initialRank, dtype: w.dtype, device: w.device), requires_grad: false));
        options[adapter] = (alpha, dropout);
    }

    /// Replaces A, E, B by the given tensors (a loaded, possibly rank-sliced checkpoint).
    public void SetTriplets(string adapter, Tensor a, Tensor e, Tensor b)
    {
        lora_A.SetParameter(adapter, new Parameter(a));
        lora_E.SetParameter(adapter, new Parameter(e));
        lora_B.SetParameter(adapter, new Parameter(b));
    }

    /// Replaces A, E, B by zeros of rank <paramref name="rank"/> (what a rank pattern shrinks to
    /// before the checkpoint's tensors are loaded).
    public void Resize(string adapter, int rank)
    {
        var w = BaseWeight;
        SetTriplets(adapter, torch.zeros(rank, InFeatures, dtype: w.dtype, device: w.device),
            torch.zeros(rank, 1, dtype: w.dtype, device: w.device), torch.zeros(OutFeatures, rank, dtype: w.dtype, device: w.device));
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter)
    {
        yield return A(adapter);
        yield return E(adapter);
        yield return B(adapter);
    }

    /// PEFT's keys `lora_A`, `lora_E`, `lora_B` (no `.weight`); with a rank pattern, copies sliced
    /// to the kept ranks (PEFT saves the pruned triplets).
    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks)
    {
        Tensor a = A(adapter), e = E(adapter), b = B(adapter);
        if (keptRanks is { } keep && keep.Length == a.shape[0] && keep.Any(k => !k))
        {
            using var idx = torch.tensor(Enumerable.Range(0, keep.Length).Where(i => keep[i]).Select(i => (long)i).ToArray(), device: a.device);
            a = a.index_select(0, idx); e = e.index_select(0, idx); b = b.index_select(1, idx);
        }
        return [("lora_A", a), ("lora_E", e), ("lora_B", b)];
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); lora_E.Remove(adapter); ranknum.Remove(adapter);
        options.Remove(adapter);
    }

    /// E · scaling / (ranknum + 1e-5): the scale (a tensor: ranknum is a parameter) goes into E, r
    /// numbers, rather than over the output.
    protected Tensor ScaledE(string adapter)
    {
        using var scaling = Scaling(adapter).ToScalar();
        return E(adapter) * scaling / RankNum(adapter).Plus(Eps);
    }

    /// ΔW in the base weight's shape: B·(A ∘ E)·scaling / (ranknum + 1e-5), reshaped as PEFT's
    /// SVDConv2d does (a no-op for a Linear).
    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        using var scaling = Scaling(adapter).ToScalar();
        var d = B(adapter).matmul(A(adapter) * E(adapter)) * scaling / RankNum(adapter).Plus(Eps);
        return d.reshape(BaseWeight.shape).MoveToOuterDisposeScope();
    }
}
