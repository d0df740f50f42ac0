using Lora.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// The affine parameters of one adapter's copy of a norm (PEFT deep-copies the norm into
/// `ln_tuning_layers.&lt;adapter&gt;`, so its keys are `ln_tuning_layers.&lt;adapter&gt;.weight` and `.bias`).
public sealed class NormAffine : nn.Module
{
    public Parameter weight;
    public Parameter? bias;

    public NormAffine(Tensor weight, Tensor? bias) : base(nameof(NormAffine))
    {
        this.weight = new Parameter(weight.detach().clone());
        this.bias = bias is null ? null : new Parameter(bias.detach().clone());
        RegisterComponents();
    }
}

/// PEFT's LNTuningLayer: the active adapter's copy of the norm replaces the frozen one in the
/// forward (a fresh copy equals it, so it changes nothing); merging writes the copy's weight and
/// bias into the norm, unmerging restores them.
public sealed class LnTuningLayer : TunerLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots ln_tuning_layers = new();
#pragma warning restore IDE1006
    readonly List<string> names = new();

    public LnTuningLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(LnTuningLayer), baseLayer) => RegisterComponents();

    public override string Method => "LN tuning";
    public override TuningMethod Owner => LnTuningMethod.Instance;
    public override IReadOnlyList<string> AdapterNames => names;
    public override Parameter BaseWeight => Channels.Own(base_layer, "weight")!;
    Parameter? BaseBias => Channels.Own(base_layer, "bias");

    public NormAffine Copy(string adapter) => ln_tuning_layers.Module<NormAffine>(adapter);

    public void AddAdapter(string adapter)
    {
        if (names.Contains(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        ln_tuning_layers.AddModule(adapter, new NormAffine(BaseWeight, BaseBias));
        names.Add(adapter);
    }

    protected override IReadOnlyList<Tensor> MergeTargets => BaseBias is { } b ? [BaseWeight, b] : [BaseWeight];

    protected override IReadOnlyList<Tensor> MergedValues(IReadOnlyList<Tensor> current, string adapter)
    {
        var c = Copy(adapter);
        return c.bias is null ? [c.weight.detach().to(current[0].dtype)] : [c.weight.detach().to(current[0].dtype), c.bias.detach().to(current[1].dtype)];
    }

    public override Tensor DeltaWeight(string adapter) => Copy(adapter).weight.detach().to(BaseWeight.dtype) - BaseWeight.detach();

    public override IEnumerable<Parameter> AdapterParameters(string adapter)
    {
        var c = Copy(adapter);
        return c.bias is null ? [c.weight] : [c.weight, c.bias];
    }

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) =>
        AdapterParameters(adapter).Select((p, i) => (i == 0 ? "ln_tuning_layers.weight" : "ln_tuning_layers.bias", (Tensor)p));

    /// The norm with the copy's affine parameters (the base output is not needed).
    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var c = Copy(adapter);
        var w = In(c.weight, x);
        var b = c.bias is null ? null : In(c.bias, x);
        var y = base_layer switch
        {
            LayerNorm n => nn.functional.layer_norm(x, n.normalized_shape, w, b, n.eps),
            LayerNorm2d n => nn.functional.layer_norm(x.permute(0, 2, 3, 1), [w.shape[0]], w, b, n.Eps).permute(0, 3, 1, 2),
            var m => throw new InvalidOperationException($"LN tuning cannot run a {m.GetType().Name}"),
        };
        return (y.dtype == result.dtype ? y : y.to(result.dtype)).MoveToOuterDisposeScope();
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        ln_tuning_layers.Remove(adapter);
        names.Remove(adapter);
    }
}
