using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// SSF after a Linear, Conv2d or norm: `ssf_scale.&lt;adapter&gt;` (γ) and `ssf_shift.&lt;adapter&gt;` (β),
/// one entry per output channel; y = base(x) · γ + β. Merging folds them into the layer's weight and
/// bias; unmerging restores both.
public sealed class SsfLayer : TunerLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots ssf_scale = new();
    public AdapterSlots ssf_shift = new();
#pragma warning restore IDE1006
    readonly List<string> names = new();

    public SsfLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(SsfLayer), baseLayer) => RegisterComponents();

    public override string Method => "SSF";
    public override TuningMethod Owner => SsfMethod.Instance;
    public override IReadOnlyList<string> AdapterNames => names;
    public override Parameter BaseWeight => Channels.Own(base_layer, "weight")!;
    Parameter BaseBias => Channels.Own(base_layer, "bias")!;

    public Parameter Scale(string adapter) => ssf_scale.Parameter(adapter);
    public Parameter Shift(string adapter) => ssf_shift.Parameter(adapter);

    public void AddAdapter(string adapter, double initStd)
    {
        if (names.Contains(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        var n = Channels.Of(base_layer) ?? throw new ArgumentException($"SSF cannot tune a {base_layer.GetType().Name}");
        var w = BaseWeight;
        var scale = Channels.Vector(n, 1.0, w);
        var shift = Channels.Vector(n, 0.0, w);
        if (initStd > 0)
            using (torch.no_grad()) { nn.init.normal_(scale, 1.0, initStd); nn.init.normal_(shift, 0.0, initStd); }
        ssf_scale.AddParameter(adapter, scale);
        ssf_shift.AddParameter(adapter, shift);
        names.Add(adapter);
    }

    /// γ shaped to scale the weight's output rows.
    Tensor RowScale(string adapter, Tensor weight)
    {
        var g = Scale(adapter).detach().to(weight.dtype);
        return weight.dim() == 1 ? g : g.view([-1, .. Enumerable.Repeat(1L, (int)weight.dim() - 1)]);
    }

    protected override IReadOnlyList<Tensor> MergeTargets => [BaseWeight, BaseBias];

    protected override IReadOnlyList<Tensor> MergedValues(IReadOnlyList<Tensor> current, string adapter)
    {
        var g = Scale(adapter).detach().to(current[1].dtype);
        return [current[0] * RowScale(adapter, current[0]), current[1] * g + Shift(adapter).detach().to(current[1].dtype)];
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var w = BaseWeight.detach();
        return (w * RowScale(adapter, w) - w).MoveToOuterDisposeScope();
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [Scale(adapter), Shift(adapter)];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) =>
        [("ssf_scale", Scale(adapter)), ("ssf_shift", Shift(adapter))];

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var g = Channels.Along(In(Scale(adapter), result), base_layer);
        var b = Channels.Along(In(Shift(adapter), result), base_layer);
        return result.mul(g).add(b).MoveToOuterDisposeScope();
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        ssf_scale.Remove(adapter);
        ssf_shift.Remove(adapter);
        names.Remove(adapter);
    }
}
