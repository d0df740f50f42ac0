using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// DoRA (weight-decomposed LoRA), as PEFT's DoraLinearVariant and DoraConv2dVariant: a learned
/// magnitude m per output feature (`lora_magnitude_vector`, initialised to ‖W + ΔW‖) rescales the
/// adapted weight: W' = m / ‖W + ΔW‖ · (W + ΔW), the norm without gradient.
sealed class DoraVariant : LoraVariant
{
    static readonly Scalar One = 1.ToScalar();

    public override string Name => "DoRA";

    static Parameter Magnitude<TFactor>(LoraLayer<TFactor> layer, string adapter) where TFactor : nn.Module<Tensor, Tensor> =>
        layer.lora_magnitude_vector.Module<DoraMagnitude>(adapter).weight;

    internal override void Init<TFactor>(LoraLayer<TFactor> layer, string adapter)
    {
        using var _ = torch.no_grad();
        layer.lora_magnitude_vector.AddModule(adapter, new DoraMagnitude(layer.WeightNorm(layer.BaseWeight.detach(), adapter)));
    }

    /// PEFT saves the magnitude as `lora_magnitude_vector` (no `.weight`).
    internal override IEnumerable<(string Key, Parameter Value)> Parameters<TFactor>(LoraLayer<TFactor> layer, string adapter)
    {
        yield return ("lora_magnitude_vector", Magnitude(layer, adapter));
    }

    internal override Tensor MergedWeight(LoraLinear layer, Tensor weight, string adapter)
    {
        var delta = layer.DeltaWeight(adapter);
        var m = Magnitude(layer, adapter).detach();
        var norm = layer.WeightNorm(weight, adapter);
        return (m / norm).view(-1, 1) * weight.Plus(delta);
    }

    internal override Tensor MergedWeight(LoraConv2d layer, Tensor weight, string adapter)
    {
        var delta = layer.DeltaWeight(adapter);
        var m = Magnitude(layer, adapter).detach();
        return (m / layer.WeightNorm(weight, adapter)).view(-1, 1, 1, 1) * weight.Plus(delta);
    }

    // PEFT defines DoRA for Linear and ConvNd only; LoraConvTranspose2d refuses a DoRA adapter before these are reached
    internal override Tensor MergedWeight(LoraConvTranspose2d layer, Tensor weight, string adapter) =>
        throw new NotSupportedException("DoRA is not defined on a ConvTranspose2d");

    internal override Tensor AddOutput(LoraConvTranspose2d layer, Tensor result, Tensor x, Tensor xd, Tensor lora, string adapter) =>
        throw new NotSupportedException("DoRA is not defined on a ConvTranspose2d");

    internal override Tensor AddOutput(LoraLinear layer, Tensor result, Tensor x, Tensor xd, Tensor h, string adapter)
    {
        var lora = nn.functional.linear(h, TunerLayer.In(layer.B(adapter).weight!, xd));
        using var scaling = layer.Scaling(adapter).ToScalar();
        // (m/‖W+ΔW‖ − 1)·(x Wᵀ) + m/‖W+ΔW‖ · lora(x) · scaling
        var scale = (Magnitude(layer, adapter) / layer.WeightNorm(layer.BaseWeight.detach(), adapter)).view(1, -1);
        var b = layer.Base.bias;
        var plain = ReferenceEquals(xd, x) ? (b is null ? result : result - b) : nn.functional.linear(xd, TunerLayer.In(layer.BaseWeight, xd));
        return TunerLayer.AddInResultDtype(result, ((scale - One) * plain).Plus(scale * lora * scaling));
    }

    internal override Tensor AddOutput(LoraConv2d layer, Tensor result, Tensor x, Tensor xd, Tensor lora, string adapter)
    {
        // (m/‖W+ΔW‖ − 1)·conv(x, W) + m/‖W+ΔW‖ · lora(x) · scaling
        var scale = Magnitude(layer, adapter) / layer.WeightNorm(layer.BaseWeight.detach(), adapter);   // (1, out, 1, 1)
        var plain = ReferenceEquals(xd, x) ? result : layer.base_layer.forward(xd);
        if (layer.Base.bias is not null) plain = plain - layer.Base.bias.view(1, -1, 1, 1);
        return TunerLayer.AddInResultDtype(result, ((scale - One) * plain).Plus(scale * lora));
    }
}

/// DoRA's learnable magnitude, one entry per output feature (PEFT's DoraLinearLayer: its only
/// parameter is `weight`, so the in-memory key is `lora_magnitude_vector.default.weight`).
public sealed class DoraMagnitude : nn.Module
{
    public Parameter weight;

    public DoraMagnitude(Tensor magnitude) : base(nameof(DoraMagnitude))
    {
        weight = new Parameter(magnitude);
        RegisterComponents();
    }
}
