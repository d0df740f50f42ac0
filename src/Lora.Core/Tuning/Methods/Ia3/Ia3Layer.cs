using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// (IA)³ around a Linear or a Conv2d, as PEFT's ia3.Linear / ia3.Conv2d: `ia3_l.&lt;adapter&gt;` is
/// (out, 1) for a Linear, (1, out, 1, 1) for a Conv2d, and scales the output; on a feed-forward
/// layer it is (1, in) / (1, in, 1, 1) and scales the input. Ones at first (no change). Merging
/// multiplies the weight (and, scaling outputs, the bias); unmerging restores them exactly (PEFT
/// divides, which is inexact).
public sealed class Ia3Layer : TunerLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots ia3_l = new();
#pragma warning restore IDE1006
    readonly List<string> names = new();

    public Ia3Layer(nn.Module<Tensor, Tensor> baseLayer, bool isFeedforward) : base(nameof(Ia3Layer), baseLayer)
    {
        IsFeedforward = isFeedforward;
        RegisterComponents();
    }

    /// Scales the input (a feed-forward module), not the output.
    public bool IsFeedforward { get; }

    public override string Method => "(IA)³";
    public override TuningMethod Owner => Ia3Method.Instance;
    public override IReadOnlyList<string> AdapterNames => names;
    public override Parameter BaseWeight => Channels.Own(base_layer, "weight")!;
    Parameter? BaseBias => Channels.Own(base_layer, "bias");
    bool IsConv => base_layer is Conv2d;

    public Parameter Vector(string adapter) => ia3_l.Parameter(adapter);

    public void AddAdapter(string adapter, bool init)
    {
        if (names.Contains(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        long n = base_layer switch
        {
            Linear l => IsFeedforward ? l.in_features : l.out_features,
            Conv2d c => IsFeedforward ? c.in_channels : c.out_channels,
            var m => throw new ArgumentException($"(IA)³ cannot tune a {m.GetType().Name}"),
        };
        long[] shape = IsConv ? [1, n, 1, 1] : IsFeedforward ? [1, n] : [n, 1];
        var w = BaseWeight;
        var v = init ? torch.ones(shape, dtype: w.dtype, device: w.device) : torch.randn(shape, dtype: w.dtype, device: w.device);
        ia3_l.AddParameter(adapter, new Parameter(v));
        names.Add(adapter);
    }

    /// The vector shaped to multiply the weight: rows (outputs) or columns (inputs).
    Tensor WeightScale(string adapter)
    {
        var v = Vector(adapter).detach();
        return IsConv && !IsFeedforward ? v.transpose(0, 1) : v;
    }

    protected override IReadOnlyList<Tensor> MergeTargets => !IsFeedforward && BaseBias is { } b ? [BaseWeight, b] : [BaseWeight];

    protected override IReadOnlyList<Tensor> MergedValues(IReadOnlyList<Tensor> current, string adapter)
    {
        var w = current[0] * WeightScale(adapter).to(current[0].dtype);
        return current.Count == 1 ? [w] : [w, current[1] * Vector(adapter).detach().reshape(current[1].shape).to(current[1].dtype)];
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var w = BaseWeight.detach();
        return (w * WeightScale(adapter).to(w.dtype) - w).MoveToOuterDisposeScope();
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [Vector(adapter)];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) => [("ia3_l", Vector(adapter))];

    /// Output scaling: base(x) · l.
    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var v = Vector(adapter);
        var s = IsConv ? v : v.flatten();
        return (result * In(s, result)).MoveToOuterDisposeScope();
    }

    /// A feed-forward layer scales its input by the unmerged active vectors: base(x · l).
    public override Tensor forward(Tensor x)
    {
        if (!IsFeedforward || AdaptersDisabled) return base.forward(x);
        var pending = ActiveAdapters.Where(a => !MergedAdapters.Contains(a)).ToList();
        if (pending.Count == 0) return base_layer.forward(x);
        using var scope = torch.NewDisposeScope();
        var h = x;
        foreach (var a in pending)
        {
            var v = Vector(a);
            h = h * In(IsConv ? v : v.flatten(), x);
        }
        return base_layer.forward(h).MoveToOuterDisposeScope();
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        ia3_l.Remove(adapter);
        names.Remove(adapter);
    }
}
