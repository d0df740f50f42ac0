using Lora.Core.IO;
using Lora.Core.Tuning;
using Lora.CommandLine;
using Lora.Dsl;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora merge --run HASH|DIR --out merged.safetensors` or
/// `lora merge --model NAME --weights base.safetensors --adapter DIR [--adapter DIR2 --weight 0.7
/// --weight 0.3 --combination cat|linear|svd] --out merged.safetensors`: loads timm weights (strict)
/// and PEFT adapter folders (several are combined first), merges the adapter into the weights and
/// writes a plain timm checkpoint with exactly the base file's keys. The output is written in one
/// atomic step at the end, so a failure leaves no file behind.
public static class MergeCommand
{
    public static int Run(MergeOptions o, TextWriter stdout)
    {
        if (ModelSource.OneOf(o.Model, o.Run) is { } which) throw new BadModelException(which);
        if (o.Run is not null) return FromRun(o, stdout);
        if (o.Weights is null || o.Adapter is null) throw new BadModelException("--weights and --adapter are required with --model (or give --run HASH)");
        var args = ModelSource.Args(o.ModelConfig);
        using var model = ModelSource.Create(o.Model, args);
        StateDict.Load(model, o.Weights, strict: true);
        var baseKeys = model.state_dict().Keys.ToList();
        var tuned = ModelSource.ApplyAdapters(model, o.Adapters)!;
        var layers = tuned.Layers.Count;
        var merged = tuned.MergeAndUnload();
        var keys = merged.state_dict().Keys.ToList();
        if (!keys.Order(StringComparer.Ordinal).SequenceEqual(baseKeys.Order(StringComparer.Ordinal)))
            throw new InvalidDataException($"merging left keys that are not the base model's ({string.Join(", ", keys.Except(baseKeys).Take(3))}); nothing was written");
        StateDict.Save(merged, o.Out, new Dictionary<string, string> { ["format"] = "pt" });
        stdout.WriteLine($"merged {layers} tuned layer(s) of {ModelSource.Describe(o.Adapters)} into {o.Weights}: wrote {o.Out} ({keys.Count} tensors)");
        return 0;
    }

    /// A run's merged model from its card (a full or head-only run's weights are already plain).
    static int FromRun(MergeOptions o, TextWriter stdout)
    {
        var run = RunLocation.Resolve(o.Run, o.Results);
        using var merged = RunModel.Load(run, new RunOverrides(o.ModelConfig, o.Weights, o.Adapters), mustMerge: true);
        var count = merged.state_dict().Count;
        StateDict.Save(merged, o.Out, new Dictionary<string, string> { ["format"] = "pt" });
        stdout.WriteLine($"merged run {run.Card.Id} ({run.Hash}, {run.Card.Method}): wrote {o.Out} ({count} tensors of {run.Card.Model})");
        return 0;
    }
}
