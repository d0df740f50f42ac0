using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoRA+ (Hayou et al. 2024), as PEFT's create_loraplus_optimizer (and the authors' loraplus repo):
/// parameters named lora_B, and every trainable parameter with one dimension (biases, norms, DoRA's
/// magnitude), train at loraplus_lr_ratio × the learning rate; the rest at the learning rate. PEFT's
/// fourth group, loraplus_lr_embedding (1e-6) for LoRA on Embedding layers, has no counterpart: this
/// project has no Embedding LoRA (and PEFT's isinstance test sees the parameter, never the module).
public static class LoraPlus
{
    /// The LoRA+ ratio of the model's LoRA adapters (null: none uses LoRA+); adapters with different
    /// ratios cannot train together.
    public static double? Ratio(nn.Module model)
    {
        var ratios = model.modules().OfType<ILoraLayer>()
            .SelectMany(l => l.AdapterNames.Select(a => l.Options(a).LoraPlusLrRatio)).Where(r => r is not null).Distinct().ToList();
        return ratios.Count switch
        {
            0 => null,
            1 => ratios[0],
            _ => throw new ArgumentException($"LoRA adapters with different LoRA+ ratios ({string.Join(", ", ratios)}) cannot train in one optimiser"),
        };
    }

    /// The learning-rate factor of each trainable parameter that does not train at the learning rate.
    public static IReadOnlyDictionary<string, double>? LearningRateScales(nn.Module model, IEnumerable<(string name, Parameter parameter)> trainable) =>
        Ratio(model) is double ratio
            ? trainable.Where(t => t.name.Contains("lora_B") || t.parameter.dim() == 1).ToDictionary(t => t.name, _ => ratio)
            : null;
}
