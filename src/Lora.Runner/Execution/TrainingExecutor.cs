using System.Globalization;
using Lora.Core.Data;
using Lora.Core.IO;
using Lora.Core.Models;
using Lora.Core.Training;
using Lora.Core.Tuning;
using Lora.Conversion;
using Lora.Dsl;
using TorchSharp;
using static TorchSharp.torch;
using CorePrecision = Lora.Core.Training.Precision;

namespace Lora.Runner;

/// Executes one run of a plan with Lora.Core: builds (or transfers) the model, applies the tuning
/// method, trains with <see cref="Trainer"/> (resuming from the run's checkpoint if a previous
/// attempt was killed), and leaves the weights in the run's artifacts folder.
public sealed class TrainingExecutor : IRunExecutor
{
    /// The full model's weights (pretraining, full fine-tuning and head-only runs).
    public const string ModelFile = "model.safetensors";
    /// The adapter folder of a PEFT-method run, in PEFT's layout.
    public const string AdapterFolder = "adapter";
    const string CheckpointFolder = "checkpoint";

    public RunResult Execute(ResolvedRun run, RunContext ctx, CancellationToken ct)
    {
        var spec = run.Spec;
        var training = spec.Training;
        var data = RunData.Load(spec.Dataset, spec.Task, OptionInt(training.ImageSize));
        ctx.Log($"data: {data.TrainCount} training items, {data.Height}x{data.Height}x{data.Channels}, {data.OutputClasses} output class(es)");

        // Same seed, same initial weights and adapters: what makes a killed run resumable.
        torch.manual_seed(spec.Seed);
        using var model = BuildModel(spec, ctx, data);
        var tuned = ToCore.apply(ToCore.ofRun(spec, model), model);
        var summary = ParameterSummary.Of(model);
        ctx.Log($"parameters: {summary.Total:N0} total, {summary.Trainable:N0} trainable");

        var options = new TrainOptions
        {
            Epochs = training.Epochs,
            BatchSize = training.Batch,
            LearningRate = training.Lr,
            WarmupSteps = training.Warmup,
            WeightDecay = training.WeightDecay,
            Seed = spec.Seed,
            Device = ctx.Device,
            Precision = PrecisionOf(training.Precision),
            CheckpointDir = Path.Combine(ctx.ArtifactsDir, CheckpointFolder),
            CheckpointEverySteps = 10,
            TrainTransforms = InputTransforms(model, data, OptionInt(training.ImageSize)) with
            {
                HorizontalFlip = training.HFlip,
                CropPadding = training.CropPadding,
                RandomResizedCropScale = OptionDouble(training.RandomResizedCrop) ?? 0,
            },
            Schedule = ScheduleOf(training.Schedule),
            DecayEpochs = training.Schedule is Schedule.Step step ? step.decayEpochs : 1,
            DecayRate = training.Schedule is Schedule.Step step2 ? step2.decayRate : 0.1,
            MinLearningRate = training.MinLr,
            ClipGradNorm = OptionDouble(training.ClipGrad) ?? 0,
            GradAccumulation = training.GradAccum,
            LabelSmoothing = training.LabelSmoothing,
            Patience = OptionInt(training.Patience),
            SelectBest = training.Select.IsBestEpoch,
        };
        var trainer = new Trainer(model, options);
        TrainResult Train(IProgress<TrainingProgress> progress) => data.IsSegmentation
            ? trainer.Resume(data.SegTrain!, data.SegValidation, progress, ct)
            : trainer.Resume(data.Train!, data.Validation, progress, ct);
        // A live bar on a terminal (it prints each epoch's end itself); plain epoch lines (console and
        // log.txt) otherwise.
        bool live = ProgressView.IsInteractive;
        var result = live ? ProgressView.Run(run.Id, Train) : Train(new Progress(ctx.Log));
        // the live bar owned the console while training: log.txt gets the epoch lines now
        if (live)
        {
            var fileLog = new Progress(ctx.LogFileOnly);
            foreach (var e in result.Epochs) fileLog.Epoch(e, training.Epochs, result.ImagesPerSecond);
        }
        if (result.ResumedFromStep is long from) ctx.Log($"resumed from the checkpoint at step {from}");

        SaveWeights(spec, model, tuned, ctx.ArtifactsDir);
        // The final weights are saved: the checkpoint is no longer needed to resume.
        Directory.Delete(options.CheckpointDir, recursive: true);
        return ToRunResult(result, summary, tuned);
    }

    static nn.Module<Tensor, Tensor> BuildModel(Run spec, RunContext ctx, RunData data)
    {
        var zooModel = spec.Model.ZooModel;
        var args = ToCore.modelArgs(zooModel).With("num_classes", (long)data.OutputClasses);
        if (!args.Has("in_chans") && data.Channels == 1 && IsFamily(zooModel.Name)) args = args.With("in_chans", 1L);
        var model = Zoo.Create(zooModel.Name, args);
        string? weights = spec.Model switch
        {
            BaseModel.FromPretrain => Path.Combine(ctx.BaseArtifactsDir
                ?? throw new InvalidOperationException($"{spec.Id} starts from a pretraining run but no base artifacts folder was given"), ModelFile),
            BaseModel.Weights w => w.path,
            _ => null,
        };
        if (weights is not null)
        {
            if (!File.Exists(weights))
                throw new FileNotFoundException($"{spec.Id}: the base weights {weights} do not exist" +
                    (spec.Model.IsFromPretrain ? " (did its pretraining run finish?)" : ""), weights);
            // A new task gets a fresh classifier (the default); `head: reuse` keeps the base's where
            // its shape fits (the class count differs: the model's fresh one all the same).
            var head = Zoo.Classifier(model);
            var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
            var fileShapes = Safetensors.ReadHeader(weights).Entries.ToDictionary(e => e.Name, e => e.Shape);
            bool reuse = spec.Kind.IsTuning && spec.Training.Head.IsReuseHead;
            bool Skip(string key) => key.StartsWith(head + ".", StringComparison.Ordinal)
                && (!reuse || fileShapes.TryGetValue(key, out var f) && shapes.TryGetValue(key, out var m) && !f.SequenceEqual(m));
            StateDict.Load(model, weights, strict: true, skip: Skip);
            ctx.Log($"base weights: {weights}");
        }
        return model;
    }

    /// The family names take only what the spec gives; named models keep their own input channels.
    static bool IsFamily(string name) => ZooNames.families.Contains(name);

    /// Grey → RGB when the model wants 3 channels; resize to the spec's image size, else to the
    /// model's fixed input size (ViT), else leave the data's size (convolutional models).
    static Transforms InputTransforms(nn.Module model, RunData data, int? imageSize)
    {
        var card = Zoo.Card(model);
        bool grey = data.Channels == 1 && card.InChans == 3;
        int channels = grey ? 3 : data.Channels;
        return new Transforms(
            Size: imageSize is int wanted && wanted != data.Height ? wanted : card.InputSize is long s && s != data.Height ? (int)s : null,
            GreyToRgb: grey,
            Mean: card.Mean.Take(channels).Concat(Enumerable.Repeat(card.Mean[^1], Math.Max(0, channels - card.Mean.Count))).ToArray(),
            Std: card.Std.Take(channels).Concat(Enumerable.Repeat(card.Std[^1], Math.Max(0, channels - card.Std.Count))).ToArray());
    }

    static CorePrecision PrecisionOf(Lora.Dsl.Precision p) =>
        p.IsBf16 ? CorePrecision.BFloat16
        : p.IsFp32 ? CorePrecision.Float32
        : throw new NotSupportedException("precision fp16 is not supported (TorchSharp has no autocast and no loss scaling here): use fp32 or bf16");

    static void SaveWeights(Run spec, nn.Module model, TunedModel? tuned, string dir)
    {
        Directory.CreateDirectory(dir);
        // an adapter holds all a PEFT-method run trained (modules to save, those trained in place
        // included); full and head runs save the whole model
        if (tuned is not null) AdapterCheckpoint.Save(tuned, Path.Combine(dir, AdapterFolder));
        else StateDict.Save(model, Path.Combine(dir, ModelFile));
    }

    static RunResult ToRunResult(TrainResult r, ParameterSummary summary, TunedModel? tuned)
    {
        var metrics = new Dictionary<string, double> { ["loss"] = r.Final.Loss };
        if (r.Final.Top1 is double top1) metrics["accuracy"] = top1;
        if (r.Final.Top5 is double top5) metrics["top5"] = top5;
        if (r.Final.Dice is double dice) metrics["dice"] = dice;
        if (r.Final.MIoU is double miou) metrics["miou"] = miou;
        var extra = new Dictionary<string, string>
        {
            ["images_per_second"] = r.ImagesPerSecond.ToString("F1", CultureInfo.InvariantCulture),
            ["steps"] = r.Steps.ToString(CultureInfo.InvariantCulture),
            ["precision"] = r.Precision.ToString(),
            ["peak_memory_source"] = r.PeakMemorySource,
        };
        // which epoch the metrics are from (the last, or the best with select: best)
        if (r.SelectedEpoch is int selected) extra["selected_epoch"] = selected.ToString(CultureInfo.InvariantCulture);
        if (r.StoppedEarly) extra["stopped_early"] = "true";
        if (tuned?.Allocator() is not null && tuned.RankPattern() is { } pattern)
            extra["rank_pattern"] = string.Join(",", pattern.Select(kv => $"{kv.Key}={kv.Value.Count(b => b)}"));
        return new RunResult
        {
            Metrics = metrics,
            Curve = r.Epochs.Select(e => new CurvePoint(e.Epoch, e.Step, e.TrainLoss, e.Validation?.Loss, e.Validation?.Top1 ?? e.Validation?.Dice)).ToList(),
            TotalParams = summary.Total,
            TrainableParams = summary.Trainable,
            TrainSeconds = r.TrainTime.TotalSeconds,
            PeakMemoryBytes = double.IsNaN(r.PeakMemoryMiB) ? null : (long)(r.PeakMemoryMiB * 1048576),
            Extra = extra,
        };
    }

    static int? OptionInt(Microsoft.FSharp.Core.FSharpOption<int>? o) => o is null ? null : o.Value;
    static double? OptionDouble(Microsoft.FSharp.Core.FSharpOption<double>? o) => o is null ? null : o.Value;

    static LrSchedule ScheduleOf(Schedule s) =>
        s.IsLinear ? LrSchedule.Linear : s.IsConstant ? LrSchedule.Constant : s.IsStep ? LrSchedule.Step : LrSchedule.Cosine;

    /// Epoch ends as log lines (the console and the run's log.txt).
    sealed class Progress(Action<string> log) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            if (p.EpochEnd is { } e) Epoch(e, p.Epochs, p.ImagesPerSecond);
        }

        public void Epoch(EpochMetrics e, int epochs, double imagesPerSecond)
        {
            var v = e.Validation;
            var metric = v is null ? "" : v.Top1 is double a ? $", val accuracy {a:P1}" : v.Dice is double d ? $", val DICE {d:F3}, mIoU {v.MIoU:F3}" : "";
            log($"epoch {e.Epoch}/{epochs}: train loss {e.TrainLoss:F4}{(v is null ? "" : $", val loss {v.Loss:F4}")}{metric}, {imagesPerSecond:F0} img/s");
        }
    }
}
