using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// BitFit around a layer with a bias: the adapter is a trained change of the bias,
/// `bitfit_bias.&lt;adapter&gt;` (zero at first, so a fresh adapter changes nothing), added to the
/// output per channel. Merging adds it to the base bias; unmerging restores the bias.
public sealed class BitFitLayer : TunerLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots bitfit_bias = new();
#pragma warning restore IDE1006
    readonly List<string> names = new();

    public BitFitLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(BitFitLayer), baseLayer) => RegisterComponents();

    public override string Method => "BitFit";
    public override TuningMethod Owner => BitFitMethod.Instance;
    public override IReadOnlyList<string> AdapterNames => names;

    /// The base bias: what BitFit merges into.
    public override Parameter BaseWeight => Channels.Own(base_layer, "bias")!;

    public Parameter Bias(string adapter) => bitfit_bias.Parameter(adapter);

    public void AddAdapter(string adapter)
    {
        if (names.Contains(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        var b = BaseWeight;
        bitfit_bias.AddParameter(adapter, new Parameter(torch.zeros_like(b)));
        names.Add(adapter);
    }

    public override Tensor DeltaWeight(string adapter) => Bias(adapter).detach().to(BaseWeight.dtype, copy: true);

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [Bias(adapter)];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) => [("bitfit_bias", Bias(adapter))];

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        return AddInResultDtype(result, Channels.Along(Bias(adapter), base_layer)).MoveToOuterDisposeScope();
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        bitfit_bias.Remove(adapter);
        names.Remove(adapter);
    }
}
