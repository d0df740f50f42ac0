using System.Globalization;
using Lora.Core.Training;
using Lora.Core.Tuning;
using Lora.Dsl;
using TorchSharp;

namespace Lora.Runner;

/// A combination of a spec (`combine:`): the LoRA adapters its source runs trained are loaded into
/// their base model and combined by weight (PEFT's add_weighted_adapter, as `lora combine`); the
/// result is evaluated on the experiment's validation data and saved as the run's PEFT adapter
/// folder, so it is a run like the others for tables, `predict`, `merge` and `eval`.
static class CombinationExecutor
{
    public static RunResult Execute(ResolvedRun run, RunContext ctx)
    {
        var spec = run.Spec;
        var combined = ((RunKind.Combining)spec.Kind).Item;
        var c = combined.Combination;
        if (ctx.SourceArtifactsDirs.Count != c.Adapters.Length)
            throw new InvalidOperationException($"{spec.Id} combines {c.Adapters.Length} adapter(s) but {ctx.SourceArtifactsDirs.Count} source folder(s) were given");
        var input = TrainingExecutor.ModelInput(spec, ctx);
        var imageSize = TrainingExecutor.OptionInt(spec.Training.ImageSize);
        var data = RunData.Load(spec.Dataset, spec.Task, imageSize, input);
        torch.manual_seed(spec.Seed);
        var (built, args) = TrainingExecutor.BuildModel(spec, ctx, data, input.Channels);
        using var model = built;
        // each source's adapter under its run's name (the names a spec gives them)
        var names = c.Adapters.Select(a => a.Item1).ToList();
        TunedModel tuned = null!;
        for (int i = 0; i < names.Count; i++)
        {
            var folder = Path.Combine(ctx.SourceArtifactsDirs[i], TrainingExecutor.AdapterFolder);
            if (!Directory.Exists(folder))
                throw new FileNotFoundException($"{spec.Id}: the adapter of '{names[i]}' is not at {folder} (did its run finish?)", folder);
            tuned = AdapterCheckpoint.Load(model, folder, names[i]);
        }
        var combination = c.Type.IsSvd ? Combination.Svd : c.Type.IsLinear ? Combination.Linear : Combination.Cat;
        var heads = names.FirstOrDefault(n => tuned.Configs[n].ModulesToSave.Count > 0);
        int? svdRank = c.SvdRank is null ? null : c.SvdRank.Value;
        tuned.AddWeightedAdapter(names, c.Adapters.Select(a => a.Item2).ToList(), ModelSource.CombinedName, combination, svdRank, null, heads);
        tuned.SetActiveAdapter(ModelSource.CombinedName);
        ctx.Log($"combined {string.Join(" + ", c.Adapters.Select(a => $"{a.Item1} ×{a.Item2.ToString(CultureInfo.InvariantCulture)}"))} ({combination.ToString().ToLowerInvariant()})");

        model.eval();
        model.to(ctx.Device);
        var transforms = TrainingExecutor.InputTransforms(model, data, imageSize, ctx.Log);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var m = data.IsSegmentation
            ? Evaluator.Segmentation(model, data.SegValidation!, transforms: transforms, device: ctx.Device)
            : Evaluator.Classification(model, data.Validation!, transforms: transforms, device: ctx.Device);
        var metrics = new Dictionary<string, double> { ["loss"] = m.Loss };
        if (m.Top1 is double top1) metrics["accuracy"] = top1;
        if (m.Top5 is double top5) metrics["top5"] = top5;
        if (m.Dice is double dice) metrics["dice"] = dice;
        if (m.MIoU is double miou) metrics["miou"] = miou;
        ctx.Log($"evaluated: {string.Join(", ", metrics.Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key} {kv.Value:0.0000}")))}");

        // the combined adapter alone, in PEFT's layout
        model.to("cpu");
        Directory.CreateDirectory(ctx.ArtifactsDir);
        AdapterCheckpoint.Save(tuned, Path.Combine(ctx.ArtifactsDir, TrainingExecutor.AdapterFolder), ModelSource.CombinedName);
        var ranks = tuned.Layers.Where(l => l.Layer.AdapterNames.Contains(ModelSource.CombinedName))
            .Select(l => ((ILoraLayer)l.Layer).Options(ModelSource.CombinedName).Rank).ToList();
        var summary = ParameterSummary.Of(model);
        return new RunResult
        {
            Metrics = metrics,
            TotalParams = summary.Total,
            // nothing trained; the combined adapter's size is in the extras
            TrainableParams = 0,
            TrainSeconds = clock.Elapsed.TotalSeconds,
            Extra = new Dictionary<string, string>
            {
                ["combination"] = combination.ToString().ToLowerInvariant(),
                ["combined_rank"] = ranks.Count == 0 ? "0" : ranks.Min() == ranks.Max() ? ranks[0].ToString(CultureInfo.InvariantCulture) : $"{ranks.Min()}-{ranks.Max()}",
                ["sources"] = string.Join(",", run.Sources),
            },
            Card = TrainingExecutor.CardOf(run, args, model, data, transforms, tuned),
        };
    }
}
