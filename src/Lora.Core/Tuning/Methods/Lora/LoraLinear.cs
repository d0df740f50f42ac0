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

    public override void AddAdapter(string adapter, LoraOptions o)
    {
        RejectExisting(adapter);
        if (o.Rank <= 0) throw new ArgumentException($"LoRA rank must be positive, got {o.Rank}");
        var w = BaseWeight;
        if (o.FusedParts is { } parts)
        {
            // loralib's MergedLinear: k·r rows of A, k·out/P rows of B (see FusedQkv)
            int k = parts.Count(p => p);
            if (k == 0 || OutFeatures % parts.Length != 0)
                throw new ArgumentException($"a fused q/v LoRA needs at least one part and out_features ({OutFeatures}) divisible by {parts.Length}");
            if (o.Variant != LoraVariant.Plain) throw new ArgumentException($"{o.Variant.Name} has no fused q/v form; use plain LoRA");
            var part = OutFeatures / parts.Length;
            CheckRankFits(o.Rank, InFeatures, part, "Linear part");
            Register(adapter, o,
                     nn.Linear(InFeatures, k * o.Rank, hasBias: false, device: w.device, dtype: w.dtype),
                     nn.Linear(o.Rank, k * part, hasBias: false, device: w.device, dtype: w.dtype));
            return;
        }
        CheckRankFits(o.Rank, InFeatures, OutFeatures, "Linear");
        Register(adapter, o,
                 nn.Linear(InFeatures, o.Rank, hasBias: false, device: w.device, dtype: w.dtype),
                 nn.Linear(o.Rank, OutFeatures, hasBias: false, device: w.device, dtype: w.dtype));
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope(); // also keeps the temporary product alive (GC)
        using var scaling = Scaling(adapter).ToScalar();
        if (options[adapter].FusedParts is { } parts)
            return FusedQkv.FullB(B(adapter).weight!, parts, options[adapter].Rank).matmul(A(adapter).weight!).mul(scaling).MoveToOuterDisposeScope();
        return B(adapter).weight!.matmul(A(adapter).weight!).mul(scaling).MoveToOuterDisposeScope();
    }

    /// Row norms of W + ΔW (one per output feature), detached as in PEFT's DoRA.
    internal override Tensor WeightNorm(Tensor weight, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var lora = B(adapter).weight!.detach().matmul(A(adapter).weight!.detach());
        using var scaling = Scaling(adapter).ToScalar();
        return weight.add(lora, alpha: scaling).norm(1, keepdim: false).detach().MoveToOuterDisposeScope();
    }

    protected override Tensor MergedWeight(Tensor weight, string adapter) => options[adapter].Variant.MergedWeight(this, weight, adapter);

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var o = options[adapter];
        var xd = Dropout(x, o.Dropout);
        var h = nn.functional.linear(xd, In(A(adapter).weight!, xd));
        if (o.FusedParts is { } parts)
            return AddLowRank(result, h, In(FusedQkv.FullB(B(adapter).weight!, parts, o.Rank), xd), o.Scaling).MoveToOuterDisposeScope();
        return o.Variant.AddOutput(this, result, x, xd, h, adapter).MoveToOuterDisposeScope();
    }

    public override string? CannotCombine => options.Values.Any(o => o.FusedParts is not null) ? "a fused q/v adapter" : null;

    protected override void InitFromWeight(LoraOptions o, Parameter a, Parameter b) => ResidualInit.Apply(o, BaseWeight, a, b);

    /// A and B when the adapter's variant lets them follow the base's precision (plain LoRA).
    public override IEnumerable<nn.Module> ReducedPrecisionModules() =>
        AdapterNames.Where(a => options[a].Variant.FactorsFollowBasePrecision).SelectMany(a => new nn.Module[] { A(a), B(a) });
}
