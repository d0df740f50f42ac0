using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoRA (and DoRA) around a Linear layer, as PEFT's lora.Linear:
/// y = base(x) + lora_B(lora_A(dropout(x))) · scaling. Keys: `base_layer.weight`,
/// `lora_A.&lt;adapter&gt;.weight`, `lora_B.&lt;adapter&gt;.weight`, `lora_magnitude_vector.&lt;adapter&gt;.weight` (DoRA).
public sealed class LoraLinear : TunerLayer
{
#pragma warning disable IDE1006
    public AdapterSlots lora_A = new();
    public AdapterSlots lora_B = new();
    public AdapterSlots lora_magnitude_vector = new();
#pragma warning restore IDE1006
    readonly Dictionary<string, LoraOptions> options = new();

    public LoraLinear(Linear baseLayer) : base(nameof(LoraLinear), baseLayer) => RegisterComponents();

    public Linear Base => (Linear)base_layer;
    public long InFeatures => Base.in_features;
    public long OutFeatures => Base.out_features;
    public override Parameter BaseWeight => Base.weight!;
    public override string Method => options.Values.Any(o => o.UseDora) ? "DoRA" : "LoRA";
    public override IReadOnlyList<string> AdapterNames => options.Keys.ToList();
    public LoraOptions Options(string adapter) => options[adapter];
    public Linear A(string adapter) => lora_A.Module<Linear>(adapter);
    public Linear B(string adapter) => lora_B.Module<Linear>(adapter);
    public double Scaling(string adapter) => options[adapter].Scaling;

    public void AddAdapter(string adapter, LoraOptions o)
    {
        if (options.ContainsKey(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        if (o.Rank <= 0) throw new ArgumentException($"LoRA rank must be positive, got {o.Rank}");
        var w = BaseWeight;
        var a = nn.Linear(InFeatures, o.Rank, hasBias: false, device: w.device, dtype: w.dtype);
        var b = nn.Linear(o.Rank, OutFeatures, hasBias: false, device: w.device, dtype: w.dtype);
        using (torch.no_grad())
        {
            if (o.InitGaussian) nn.init.normal_(a.weight!, 0, 1.0 / o.Rank);
            else nn.init.kaiming_uniform_(a.weight!, a: Math.Sqrt(5));
            nn.init.zeros_(b.weight!);
        }
        lora_A.AddModule(adapter, a);
        lora_B.AddModule(adapter, b);
        options[adapter] = o;
        if (o.UseDora)
        {
            using var _ = torch.no_grad();
            lora_magnitude_vector.AddModule(adapter, new DoraMagnitude(WeightNorm(w.detach(), adapter)));
        }
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter)
    {
        yield return A(adapter).weight!;
        yield return B(adapter).weight!;
        if (options[adapter].UseDora) yield return lora_magnitude_vector.Module<DoraMagnitude>(adapter).weight;
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); lora_magnitude_vector.Remove(adapter);
        options.Remove(adapter);
    }

    // Numbers in tensor ops are held as Scalars (static fields, `using` locals) until the op returns:
    // a temporary Scalar (from `t * 2.0`) may be finalized by the GC while native code still reads it.
    static readonly Scalar One = 1.ToScalar();

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope(); // also keeps the temporary product alive (GC)
        using var scaling = Scaling(adapter).ToScalar();
        return B(adapter).weight!.matmul(A(adapter).weight!).mul(scaling).MoveToOuterDisposeScope();
    }

    /// Row norms of W + ΔW (one per output feature), detached as in PEFT's DoRA.
    Tensor WeightNorm(Tensor weight, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var lora = B(adapter).weight!.detach().matmul(A(adapter).weight!.detach());
        using var scaling = Scaling(adapter).ToScalar();
        return weight.add(lora, alpha: scaling).norm(1, keepdim: false).detach().MoveToOuterDisposeScope();
    }

    protected override Tensor MergedWeight(Tensor weight, string adapter)
    {
        var delta = DeltaWeight(adapter);
        if (!options[adapter].UseDora) return weight + delta;
        var m = lora_magnitude_vector.Module<DoraMagnitude>(adapter).weight.detach();
        var norm = WeightNorm(weight, adapter);
        return (m / norm).view(-1, 1) * (weight + delta);
    }

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var o = options[adapter];
        var xd = Dropout(x, o.Dropout);
        var h = nn.functional.linear(xd, In(A(adapter).weight!, xd));
        if (!o.UseDora) return AddLowRank(result, h, In(B(adapter).weight!, xd), o.Scaling).MoveToOuterDisposeScope();
        var lora = nn.functional.linear(h, In(B(adapter).weight!, xd));
        return AddInResultDtype(result, DoraOutput(x, xd, lora, adapter, result)).MoveToOuterDisposeScope();
    }

    Tensor DoraOutput(Tensor x, Tensor xd, Tensor lora, string adapter, Tensor baseOutput)
    {
        var o = options[adapter];
        using var scaling = o.Scaling.ToScalar();
        // PEFT's DoRA: (m/‖W+ΔW‖ − 1)·(x Wᵀ) + m/‖W+ΔW‖ · lora(x) · scaling, the norm without gradient.
        var m = lora_magnitude_vector.Module<DoraMagnitude>(adapter).weight;
        var norm = WeightNorm(BaseWeight.detach(), adapter);
        var scale = (m / norm).view(1, -1);
        Tensor plain;
        if (ReferenceEquals(xd, x)) plain = Base.bias is null ? baseOutput : baseOutput - Base.bias;
        else plain = nn.functional.linear(xd, In(BaseWeight, xd));
        return (scale - One) * plain + scale * lora * scaling;
    }
}
