using Lora.Core.Tuning;
using Lora.CommandLine;

namespace Lora.Runner;

/// `lora combine --model M [--model-config J] --adapter A1 --adapter A2 [--weight 0.7 --weight 0.3]
/// [--combination cat|linear|svd] [--svd-rank R] [--svd-clamp Q] --out DIR`: PEFT's
/// add_weighted_adapter from the command line. The LoRA adapters are loaded into the (untrained) model
/// and combined; the combined adapter is written as a PEFT adapter folder (adapter_config.json +
/// adapter_model.safetensors) that `lora merge`, `lora predict` and PEFT's PeftModel.from_pretrained
/// load. The base weights are not needed: the combination uses only the adapters' factors.
public static class CombineCommand
{
    public static int Run(CombineOptions o, TextWriter stdout)
    {
        using var model = ModelSource.Create(o.Model, ModelSource.Args(o.ModelConfig));
        var tuned = ModelSource.Combine(model, o.Adapters);
        AdapterCheckpoint.Save(tuned, o.Out, ModelSource.CombinedName);
        var ranks = tuned.Layers.Where(l => l.Layer.AdapterNames.Contains(ModelSource.CombinedName))
            .Select(l => ((ILoraLayer)l.Layer).Options(ModelSource.CombinedName).Rank).ToList();
        stdout.WriteLine($"combined {ModelSource.Describe(o.Adapters, weighted: true)}: wrote {o.Out} ({ranks.Count} layer(s), rank {ranks.Min()}{(ranks.Max() != ranks.Min() ? $"-{ranks.Max()}" : "")})");
        return 0;
    }
}
