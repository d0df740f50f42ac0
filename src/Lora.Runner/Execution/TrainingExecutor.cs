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
        // nothing trains: the sources' adapters are combined and evaluated
        if (run.Spec.Kind is RunKind.Combining) return CombinationExecutor.Execute(run, ctx);
        var spec = run.Spec;
        var training = spec.Training;
        // on CPU, the run's memory is its peak above what the process held (live) before it began
        PeakMemory.ReleaseFreedMemory();
        var baseline = PeakMemory.ProcessResidentBytes();
        var input = ModelInput(spec, ctx);
        var data = RunData.Load(spec.Dataset, spec.Task, OptionInt(training.ImageSize), input);
        ctx.Log($"data: {data.TrainCount} training items, {data.Height}x{data.Height}x{data.Channels}, {data.OutputClasses} output class(es)");
        if (spec.Dataset.Source.IsImageFolder && (input.Size is not null || input.Channels is not null))
            ctx.Log($"input: the image folder is read as the model takes it: {(input.Channels == 1 ? "grey" : "RGB")}{(input.Size is int sz && OptionInt(training.ImageSize) is null ? $" at {sz} px" : "")}");

        // Same seed, same initial weights and adapters: what makes a killed run resumable.
        torch.manual_seed(spec.Seed);
        var (built, args) = BuildModel(spec, ctx, data, input.Channels);
        using var model = built;
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
            TrainTransforms = InputTransforms(model, data, OptionInt(training.ImageSize), ctx.Log) with
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
            EvalAtStart = true,
        };
        var card = CardOf(run, args, model, data, options.TrainTransforms, tuned);
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
        return AboveBaseline(ToRunResult(result, summary, tuned, card), baseline);
    }

    /// A CPU peak (the process's VmHWM) less the resident set before the run: the run's own share.
    static RunResult AboveBaseline(RunResult r, long? baseline)
    {
        if (baseline is not long b || r.PeakMemoryBytes is not long peak || r.Extra.GetValueOrDefault("peak_memory_source") != MemorySources.Process)
            return r;
        // the baseline itself is not kept: it differs between two runs of one configuration
        var extra = new Dictionary<string, string>(r.Extra) { ["peak_memory_source"] = MemorySources.AboveBaseline };
        return new RunResult
        {
            Metrics = r.Metrics, Curve = r.Curve, TotalParams = r.TotalParams, TrainableParams = r.TrainableParams,
            TrainSeconds = r.TrainSeconds, PeakMemoryBytes = Math.Max(0, peak - b), Extra = extra,
            SelectedEpoch = r.SelectedEpoch, Selection = r.Selection, Card = r.Card,
        };
    }

    /// About this many training-loss points per run, whatever its length (cheap: the trainer keeps every step's loss).
    const int CurvePoints = 24;

    /// The curve: step 0 (the first batch's loss at the initial weights, and the validation before
    /// training), the mean training loss of every window of N steps, and each epoch's end with its validation.
    public static IReadOnlyList<CurvePoint> CurveOf(TrainResult r)
    {
        static double? Reg(double loss, double? task) => task is double t ? loss - t : null;
        var points = new List<CurvePoint>();
        if (r.LossCurve.Count > 0)
        {
            var first = r.LossCurve[0];
            var v0 = r.InitialValidation;
            points.Add(new CurvePoint(0, 0, first.Loss, v0?.Loss, v0?.Top1 ?? v0?.Dice) { TaskLoss = first.TaskLoss, Regularizer = Reg(first.Loss, first.TaskLoss) });
        }
        var every = Math.Max(1, (int)Math.Ceiling(r.LossCurve.Count / (double)CurvePoints));
        foreach (var window in r.LossCurve.Chunk(every))
        {
            var last = window[^1];
            var loss = window.Average(s => s.Loss);
            double? task = window.All(s => s.TaskLoss is not null) ? window.Average(s => s.TaskLoss!.Value) : null;
            points.Add(new CurvePoint(last.Epoch, last.Step, loss, null, null) { TaskLoss = task, Regularizer = Reg(loss, task) });
        }
        foreach (var e in r.Epochs)
        {
            var losses = r.LossCurve.Where(s => s.Epoch == e.Epoch).ToList();
            double? task = losses.Count > 0 && losses.All(s => s.TaskLoss is not null) ? losses.Average(s => s.TaskLoss!.Value) : null;
            points.Add(new CurvePoint(e.Epoch, e.Step, e.TrainLoss, e.Validation?.Loss, e.Validation?.Top1 ?? e.Validation?.Dice)
                { TaskLoss = task, Regularizer = Reg(e.TrainLoss, task) });
        }
        return points.OrderBy(p => p.Step).ThenBy(p => p.ValMetric is null ? 0 : 1).ToList();
    }

    /// The run's model card: what `predict`, `merge`, `forward`, `export` and `eval` rebuild it from.
    internal static RunCard CardOf(ResolvedRun run, ModelArgs args, nn.Module model, RunData data, Transforms transforms, TunedModel? tuned)
    {
        var spec = run.Spec;
        var card = Zoo.Card(model);
        var classes = data.Train?.Classes.ToArray()
            ?? Enumerable.Range(0, data.SegTrain!.NumClasses).Select(i => i == 0 ? "background" : data.SegTrain.NumClasses == 2 ? "object" : $"class {i}").ToArray();
        return new RunCard
        {
            Hash = run.Hash,
            Id = run.Id,
            Source = spec.Model.IsOnnx ? "onnx" : "zoo",
            Model = spec.Model.ZooModel.Name,
            Options = (System.Text.Json.Nodes.JsonObject)System.Text.Json.Nodes.JsonNode.Parse(args.ToJson())!,
            InChans = card.InChans,
            InputSize = transforms.Size ?? data.Height,
            Mean = transforms.Mean ?? [],
            Std = transforms.Std ?? [],
            Classes = classes,
            Task = Canonical.taskName(spec.Task),
            Classifier = card.Classifier,
            Backbone = card.Backbone,
            Method = spec.Method.Name,
            Rank = spec.RankValue,
            MethodConfig = (System.Text.Json.Nodes.JsonObject)System.Text.Json.Nodes.JsonNode.Parse(Lora.Dsl.JsonModule.write(Canonical.methodJson(spec.Method)))!,
            Mergeable = tuned?.ActiveAdapter is not { } active || tuned.Configs[active].Method.NotMergeable is null,
            Weights = tuned is null ? RunCard.ModelWeights : RunCard.AdapterWeights,
            BaseRun = run.DependsOn,
            BaseWeights = spec.Model is BaseModel.Weights w ? w.path : null,
            Seed = spec.Seed,
        };
    }

    /// The input size and channels the model fixes before any data is seen: a pretrained base's (its
    /// card), else the model's own on the meta device where the spec or the name fixes them (a family
    /// without in_chans takes the data's channels: null).
    internal static (int? Size, int? Channels) ModelInput(Run spec, RunContext ctx)
    {
        if (ctx.BaseCardPath is { } path && File.Exists(path))
        {
            var b = RunCard.Read(path);
            return (b.InputSize, (int)b.InChans);
        }
        var zoo = spec.Model.ZooModel;
        var args = ToCore.modelArgs(zoo);
        try
        {
            using var meta = spec.Model.IsOnnx ? ToCore.importOnnx(zoo.Name, args) : Zoo.Create(zoo.Name, args, torch.META);
            var card = Zoo.Card(meta);
            return ((int?)card.InputSize, args.Has("in_chans") || !IsFamily(zoo.Name) ? (int)card.InChans : null);
        }
        catch (ArgumentException) { return (null, null); } // the real build says what is wrong
    }

    internal static (nn.Module<Tensor, Tensor> Model, ModelArgs Args) BuildModel(Run spec, RunContext ctx, RunData data, int? channels)
    {
        var zooModel = spec.Model.ZooModel;
        var args = ToCore.modelArgs(zooModel).With("num_classes", (long)data.OutputClasses);
        // a family takes the channels of its base (a pretraining run's card), else the data's
        if (!args.Has("in_chans") && IsFamily(zooModel.Name) && (channels ?? data.Channels) == 1) args = args.With("in_chans", 1L);
        nn.Module<Tensor, Tensor> model = spec.Model.IsOnnx ? ToCore.importOnnx(zooModel.Name, args) : Zoo.Create(zooModel.Name, args);
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
            BaseWeights.Load(model, weights, reuseHead: spec.Kind.IsTuning && spec.Training.Head.IsReuseHead);
            ctx.Log($"base weights: {weights}");
        }
        return (model, args);
    }

    /// The family names take only what the spec gives; named models keep their own input channels.
    static bool IsFamily(string name) => ZooNames.families.Contains(name);

    /// Grey → RGB when the model wants 3 channels; resize to the spec's image size, else to the
    /// model's fixed input size (ViT), else leave the data's size (convolutional models).
    internal static Transforms InputTransforms(nn.Module model, RunData data, int? imageSize, Action<string> log)
    {
        var card = Zoo.Card(model);
        bool grey = data.Channels == 1 && card.InChans == 3;
        bool toGrey = data.Channels == 3 && card.InChans == 1;
        if (!grey && !toGrey && data.Channels != card.InChans)
            throw new InvalidDataException($"the model takes {card.InChans} input channels and the data has {data.Channels}: only grey <-> RGB converts; set the model's in_chans to 1 or 3");
        int channels = (int)card.InChans;
        int? size = imageSize is int wanted && wanted != data.Height ? wanted : card.InputSize is long s && s != data.Height ? (int)s : null;
        if (grey) log("input: grey images repeated to 3 channels (the model takes RGB)");
        if (toGrey) log("input: RGB images averaged to 1 channel (the model takes grey)");
        if (size is int to) log($"input: resized {data.Height} -> {to} px ({(imageSize is null ? "the model's fixed input size" : "the spec's image_size")})");
        return new Transforms(
            Size: size,
            GreyToRgb: grey,
            RgbToGrey: toGrey,
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

    static RunResult ToRunResult(TrainResult r, ParameterSummary summary, TunedModel? tuned, RunCard card)
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
        if (tuned?.Allocator() is not null && tuned.RankPattern() is { } pattern)
            extra["rank_pattern"] = string.Join(",", pattern.Select(kv => $"{kv.Key}={kv.Value.Count(b => b)}"));
        return new RunResult
        {
            Metrics = metrics,
            Curve = CurveOf(r),
            TotalParams = summary.Total,
            TrainableParams = summary.Trainable,
            TrainSeconds = r.TrainTime.TotalSeconds,
            PeakMemoryBytes = double.IsNaN(r.PeakMemoryMiB) ? null : (long)(r.PeakMemoryMiB * 1048576),
            Extra = extra,
            Card = card,
            // which epoch the metrics are from (with select: best; null: the last)
            SelectedEpoch = r.SelectedEpoch,
            Selection = r.SelectedEpoch is null ? null
                : $"best validation {(r.Final.Top1 is not null ? "accuracy" : r.Final.Dice is not null ? "DICE" : "loss")}{(r.StoppedEarly ? ", stopped early" : "")}",
        };
    }

    internal static int? OptionInt(Microsoft.FSharp.Core.FSharpOption<int>? o) => o is null ? null : o.Value;
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
