using Lora.Core.IO;
using Lora.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// <summary>What a command may set over a run's card (explicit flags win): model options, base weights,
/// and adapters (none given: the run's own adapter; --disable-adapter alone disables the run's own).</summary>
public sealed record RunOverrides(string? ModelConfig = null, string? Weights = null, Lora.CommandLine.AdapterChoice? Adapters = null);

/// <summary>
/// The trained model of a finished run, rebuilt from its card: the model with its constructor
/// arguments, its base weights (a pretraining run's, a weights file, or the seed's initialisation),
/// then its adapter — merged when the method can merge, applied as it is otherwise (a bottleneck
/// Adapter), so every method predicts.
/// </summary>
public static class RunModel
{
    /// <param name="mustMerge">refuse a method that cannot merge (merge, export) rather than keep its adapter in place</param>
    public static nn.Module<Tensor, Tensor> Load(RunLocation run, RunOverrides o, bool mustMerge)
    {
        var card = run.Card;
        var args = ModelArgs.FromJson(card.Options.ToJsonString(), $"{RunCard.FileName} of {card.Id}");
        if (o.ModelConfig is not null) args = args.With(ModelArgs.FromFile(o.ModelConfig));
        bool adapterRun = card.Weights == RunCard.AdapterWeights;
        // a zoo model tuned from scratch has no base file: the seed rebuilds its initial weights
        if (adapterRun && card.BaseRun is null && card.BaseWeights is null && o.Weights is null) torch.manual_seed(card.Seed);
        var model = ModelSource.Create(card.Model, args);
        if (!adapterRun)
        {
            StateDict.Load(model, o.Weights ?? run.Artifact(TrainingExecutor.ModelFile), strict: true);
        }
        else
        {
            var baseWeights = o.Weights
                ?? (card.BaseRun is { } b ? BaseOf(run, b) : card.BaseWeights);
            if (baseWeights is not null) BaseWeights.Load(model, baseWeights);
            var adapters = o.Adapters is { Paths.IsEmpty: false } given ? given
                : ModelSource.One(run.Artifact(TrainingExecutor.AdapterFolder), disabled: o.Adapters?.Disabled ?? false);
            model = ModelSource.MergeAdapters(model, adapters, plain: mustMerge);
        }
        model.eval();
        return model;
    }

    /// <summary>The model of a model command: a finished run's (<c>--run</c>, rebuilt from its card, the
    /// flags overriding it) or the one the flags name (<c>--model</c>); exactly one of the two.</summary>
    public static (nn.Module<Tensor, Tensor> Model, RunLocation? Run) FromCommandLine(
        string? model, string? run, string results, string? modelConfig, string? weights, Lora.CommandLine.AdapterChoice adapters, bool mustMerge)
    {
        if (ModelSource.OneOf(model, run) is { } which) throw new BadModelException(which);
        if (run is null) return (ModelSource.LoadMerged(model!, modelConfig, weights, adapters, plain: mustMerge), null);
        var at = RunLocation.Resolve(run, results);
        return (Load(at, new RunOverrides(modelConfig, weights, adapters), mustMerge), at);
    }

    /// The base run's weights, in the same store's artifacts.
    static string BaseOf(RunLocation run, string baseHash)
    {
        var path = Path.Combine(run.Store.ArtifactsDir(baseHash), TrainingExecutor.ModelFile);
        if (!File.Exists(path))
            throw new FileNotFoundException($"{run.Card.Id} starts from run {baseHash}, whose weights {path} do not exist (weights are not committed); " +
                $"`lora run SPEC --only {run.Hash}` recomputes them", path);
        return path;
    }
}

/// Base weights into a fresh model: strict, except the classifier, which keeps its fresh
/// initialisation unless <c>reuseHead</c> and its shape fits (a new task's head of another class
/// count is always fresh). The one rule for training and for rebuilding a run.
public static class BaseWeights
{
    public static void Load(nn.Module model, string weights, bool reuseHead = true)
    {
        var head = Zoo.Classifier(model);
        var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        var fileShapes = Safetensors.ReadHeader(weights).Entries.ToDictionary(e => e.Name, e => e.Shape);
        bool Skip(string key) => key.StartsWith(head + ".", StringComparison.Ordinal)
            && (!reuseHead || fileShapes.TryGetValue(key, out var f) && shapes.TryGetValue(key, out var m) && !f.SequenceEqual(m));
        StateDict.Load(model, weights, strict: true, skip: Skip);
    }
}
