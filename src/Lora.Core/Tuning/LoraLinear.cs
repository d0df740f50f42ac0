using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoRA (and DoRA) around a Linear layer, as PEFT's lora.Linear:
/// y = base(x) + lora_B(lora_A(dropout(x))) · scaling. Keys: `base_layer.weight`,
/// `lora_A.&lt;adapter&gt;.weight`, `lora_B.&lt;adapter&gt;.weight`, `lora_magnitude_vector.&lt;adapter&gt;.weight` (DoRA).
public sealed class LoraLinear : LoraLayer<Linear>
{
    public LoraLinear(Linear baseLayer) : base(nameof(LoraLinear), baseLayer) => RegisterComponents();

    public Linear Base => (Linear)base_layer;
    public long InFeatures => Base.in_features;
    public long OutFeatures => Base.out_features;
    public override Parameter BaseWeight => Base.weight!;

    public void AddAdapter(string adapter, LoraOptions o)
    {
        RejectExisting(adapter);
        if (o.Rank <= 0) throw new ArgumentException($"LoRA rank must be positive, got {o.Rank}");
        CheckRankFits(o.Rank, InFeatures, OutFeatures, "Linear");
        var w = BaseWeight;
        Register(adapter, o,
                 nn.Linear(InFeatures, o.Rank, hasBias: false, device: w.device, dtype: w.dtype),
                 nn.Linear(o.Rank, OutFeatures, hasBias: false, device: w.device, dtype: w.dtype));
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope(); // also keeps the temporary product alive (GC)
        using var scaling = Scaling(adapter).ToScalar();
        return B(adapter).weight!.matmul(A(adapter).weight!).mul(scaling).MoveToOuterDisposeScope();
    }

    /// Row norms of W + ΔW (one per output feature), detached as in PEFT's DoRA.
    protected override Tensor WeightNorm(Tensor weight, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var lora = B(adapter).weight!.detach().matmul(A(adapter).weight!.detach());
        using var scaling = Scaling(adapter).ToScalar();
        return weight.add(lora, alpha: scaling).norm(1, keepdim: false).detach().MoveToOuterDisposeScope();
    }

    protected override Tensor MergedWeight(Tensor weight, string adapter)
    {
        var delta = DeltaWeight(adapter);
        if (!options[adapter].UseDora) return weight.Plus(delta);
        var m = Magnitude(adapter).detach();
        var norm = WeightNorm(weight, adapter);
        return (m / norm).view(-1, 1) * weight.Plus(delta);
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
        var m = Magnitude(adapter);
        var norm = WeightNorm(BaseWeight.detach(), adapter);
        var scale = (m / norm).view(1, -1);
        Tensor plain;
        if (ReferenceEquals(xd, x)) plain = Base.bias is null ? baseOutput : baseOutput - Base.bias;
        else plain = nn.functional.linear(xd, In(BaseWeight, xd));
        return ((scale - One) * plain).Plus(scale * lora * scaling);
    }
}
