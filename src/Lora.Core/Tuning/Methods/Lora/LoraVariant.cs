using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// How one LoRA adapter computes beside its factors A and B, as PEFT's LoraVariant: plain LoRA
/// (W + B·A·s) or a variant with state of its own (DoRA's magnitude). One overload per LoRA layer
/// kind, so a new layer kind is a compile error in every variant until it is covered.
public abstract class LoraVariant
{
    public static readonly LoraVariant Plain = new PlainLora();
    public static readonly LoraVariant Dora = new DoraVariant();

    /// The method's name in summaries and messages ("LoRA", "DoRA").
    public abstract string Name { get; }

    /// Whether a Linear's A and B may be stored in the frozen base's reduced precision (see
    /// MixedPrecision): true when the forward only multiplies by them.
    public virtual bool FactorsFollowBasePrecision => false;

    /// Creates the variant's own state once A and B of a new adapter exist.
    internal virtual void Init<TFactor>(LoraLayer<TFactor> layer, string adapter) where TFactor : nn.Module<Tensor, Tensor> { }

    /// The variant's trainable parameters beside A and B, under their PEFT keys relative to the layer.
    internal virtual IEnumerable<(string Key, Parameter Value)> Parameters<TFactor>(LoraLayer<TFactor> layer, string adapter) where TFactor : nn.Module<Tensor, Tensor> => [];

    internal abstract Tensor MergedWeight(LoraLinear layer, Tensor weight, string adapter);
    internal abstract Tensor MergedWeight(LoraConv2d layer, Tensor weight, string adapter);
    internal abstract Tensor MergedWeight(LoraConvTranspose2d layer, Tensor weight, string adapter);

    /// result + the adapter's output, given the dropped-out input xd and h = A(xd).
    internal abstract Tensor AddOutput(LoraLinear layer, Tensor result, Tensor x, Tensor xd, Tensor h, string adapter);

    /// result + the adapter's output, given the dropped-out input xd and lora = B(A(xd))·scaling.
    internal abstract Tensor AddOutput(LoraConv2d layer, Tensor result, Tensor x, Tensor xd, Tensor lora, string adapter);

    /// result + the adapter's output, given lora = B(A(xd))·scaling.
    internal abstract Tensor AddOutput(LoraConvTranspose2d layer, Tensor result, Tensor x, Tensor xd, Tensor lora, string adapter);
}

/// Plain LoRA: W + ΔW, output + B(A(x))·scaling.
sealed class PlainLora : LoraVariant
{
    public override string Name => "LoRA";
    public override bool FactorsFollowBasePrecision => true;

    internal override Tensor MergedWeight(LoraLinear layer, Tensor weight, string adapter) => weight.Plus(layer.DeltaWeight(adapter));
    internal override Tensor MergedWeight(LoraConv2d layer, Tensor weight, string adapter) => weight.Plus(layer.DeltaWeight(adapter));
    internal override Tensor MergedWeight(LoraConvTranspose2d layer, Tensor weight, string adapter) => weight.Plus(layer.DeltaWeight(adapter));

    internal override Tensor AddOutput(LoraLinear layer, Tensor result, Tensor x, Tensor xd, Tensor h, string adapter) =>
        TunerLayer.AddLowRank(result, h, TunerLayer.In(layer.B(adapter).weight!, xd), layer.Scaling(adapter));

    internal override Tensor AddOutput(LoraConv2d layer, Tensor result, Tensor x, Tensor xd, Tensor lora, string adapter) =>
        TunerLayer.AddInResultDtype(result, lora);

    internal override Tensor AddOutput(LoraConvTranspose2d layer, Tensor result, Tensor x, Tensor xd, Tensor lora, string adapter) =>
        TunerLayer.AddInResultDtype(result, lora);
}
