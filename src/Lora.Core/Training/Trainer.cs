using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using Lora.Core.Data;
using Lora.Core.Tuning;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using DataLoader = Lora.Core.Data.DataLoader;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Lora.Core.Training;

/// Trains the parameters of a model that have requires_grad = true: AdamW, linear warm-up then a
/// cosine schedule, gradient clipping, the tuning method's step hooks (<see cref="StepHooks"/>),
/// evaluation after every epoch, checkpoints, and resumption.
///
/// Reproducibility: the data order is a function of (seed, epoch), augmentation of (seed, epoch,
/// batch) and torch's generator (dropout) is re-seeded from (seed, step) before every step, so a run
/// resumed from a checkpoint repeats exactly what the uninterrupted run would have done.
public sealed class Trainer
{
    public const string CheckpointFileName = "checkpoint.bin";

    readonly nn.Module<Tensor, Tensor> model;

    public TrainOptions Options { get; }

    static Trainer() => NativeWorkarounds.Apply();

    public Trainer(nn.Module<Tensor, Tensor> model, TrainOptions options)
    {
        options.Validate();
        this.model = model;
        Options = options;
    }

    public string? CheckpointPath => Options.CheckpointDir is null ? null : Path.Combine(Options.CheckpointDir, CheckpointFileName);

    /// Trains a classifier (images → logits [B,K]) from the first step.
    public TrainResult Fit(ImageDataset train, ImageDataset? validation = null, IProgress<TrainingProgress>? progress = null, CancellationToken cancel = default) =>
        Run(new ClassificationTask(train, validation), false, progress, cancel);

    /// Trains a segmenter (images → mask logits [B,1,H,W] or [B,K,H,W]) from the first step.
    public TrainResult Fit(SegmentationDataset train, SegmentationDataset? validation = null, IProgress<TrainingProgress>? progress = null, CancellationToken cancel = default) =>
        Run(new SegmentationTask(train, validation), false, progress, cancel);

    /// Continues from the checkpoint in <see cref="TrainOptions.CheckpointDir"/> (or starts over when
    /// there is none). The model must be built the same way as for the interrupted run.
    public TrainResult Resume(ImageDataset train, ImageDataset? validation = null, IProgress<TrainingProgress>? progress = null, CancellationToken cancel = default) =>
        Run(new ClassificationTask(train, validation), true, progress, cancel);

    public TrainResult Resume(SegmentationDataset train, SegmentationDataset? validation = null, IProgress<TrainingProgress>? progress = null, CancellationToken cancel = default) =>
        Run(new SegmentationTask(train, validation), true, progress, cancel);

    /// The learning rate of the 0-based step: linear warm-up, then cosine decay to the minimum.
    public static double LearningRateAt(TrainOptions o, long step, long totalSteps)
    {
        if (step < o.WarmupSteps) return o.LearningRate * (step + 1) / o.WarmupSteps;
        long decay = Math.Max(1, totalSteps - o.WarmupSteps);
        double progress = Math.Min(1.0, (double)(step - o.WarmupSteps) / decay);
        return o.MinLearningRate + 0.5 * (o.LearningRate - o.MinLearningRate) * (1 + Math.Cos(Math.PI * progress));
    }

    TrainResult Run(ITask task, bool resume, IProgress<TrainingProgress>? progress, CancellationToken cancel)
    {
        var o = Options;
        Devices.Require(o.Device);
        var device = torch.device(o.Device);
        model.to(device);
        var exactWeights = MixedPrecision.Apply(model, o.Precision);
        var inputType = Evaluator.InputType(o.Precision);

        using var training = new TrainingStep(model, o, exactWeights);
        foreach (var w in exactWeights.Values) w.Dispose(); // copied into the masters
        var trainable = training.Trainable;
        var optimizer = training.Optimizer;
        var loader = task.Loader(o, device, train: true);
        var evalLoader = task.Loader(o, device, train: false);
        int perEpoch = loader.BatchesPerEpoch;
        long total = (long)perEpoch * o.Epochs;

        var hooks = training.Hooks;
        foreach (var h in hooks) h.Begin(total);

        var st = new RunState { TotalSteps = total, StepsPerEpoch = perEpoch, Seed = o.Seed, BatchSize = o.BatchSize };
        long? resumedFrom = null;
        var ckpt = CheckpointPath;
        string? lastGood = null;
        if (resume && ckpt is not null && File.Exists(ckpt))
        {
            st = Load(ckpt, st, trainable, optimizer, hooks);
            resumedFrom = st.Step;
            lastGood = ckpt;
        }

        using var memory = PeakMemory.Start(device.type == DeviceType.CUDA ? Math.Max(0, device.index) : null);
        var clock = new Stopwatch();
        long trainableCount = optimizer.Numel;
        int readEvery = o.LossReadEvery > 0 ? o.LossReadEvery : device.type == DeviceType.CUDA ? 8 : 1;
        var pending = new List<(long Step, int Epoch, double Lr, Tensor Loss, Tensor? Task)>();
        void ReadLosses()
        {
            if (pending.Count == 0) return;
            float[] values;
            using (var all = stack(pending.Select(p => p.Loss).ToArray()).to(ScalarType.Float32).cpu()) values = all.data<float>().ToArray();
            float[]? tasks = null;
            if (pending.All(p => p.Task is not null))
                using (var all = stack(pending.Select(p => p.Task!).ToArray()).to(ScalarType.Float32).cpu()) tasks = all.data<float>().ToArray();
            var read = pending.ToArray();
            foreach (var p in read) { p.Loss.Dispose(); p.Task?.Dispose(); }
            pending.Clear();
            for (int i = 0; i < read.Length; i++)
            {
                if (!double.IsFinite(values[i])) throw new TrainingDivergedException(read[i].Step, read[i].Epoch, values[i], lastGood);
                st.LossCurve.Add(new StepLoss(read[i].Step, read[i].Epoch + 1, values[i], read[i].Lr, tasks?[i]));
            }
        }
        if (o.EvalAtStart && st.Step == 0 && task.HasValidation)
            st.InitialValidation ??= task.Evaluate(model, evalLoader, inputType, o);
        model.train();
        try
        {
        for (int epoch = (int)(st.Step / perEpoch); epoch < o.Epochs; epoch++)
        {
            int start = (int)(st.Step - (long)epoch * perEpoch);
            foreach (var batch in loader.Epoch(epoch, start))
                using (batch)
                {
                    cancel.ThrowIfCancellationRequested();
                    clock.Start();
                    using (var scope = NewDisposeScope())
                    {
                        long stepSeed = Seeded.Mix(o.Seed, st.Step, 0xd0);
                        using (torch.random.manual_seed(stepSeed)) { }
                        if (device.type == DeviceType.CUDA) torch.cuda.manual_seed_all(stepSeed);
                        double lr = LearningRateAt(o, st.Step, total);
                        var taskLoss = task.Loss(model, batch, inputType, o);
                        var loss = training.WithExtraLoss(taskLoss);
                        // a regulariser was added (AdaLoRA): the task loss is kept apart for the curves
                        var regularized = !ReferenceEquals(loss, taskLoss);
                        if (readEvery == 1)
                        {
                            // read before the update: a diverged step changes nothing
                            double value = loss.item<float>();
                            if (!double.IsFinite(value))
                                throw new TrainingDivergedException(st.Step + 1, epoch, value, lastGood);
                            double? taskValue = regularized ? taskLoss.item<float>() : null;
                            training.BackwardAndStep(loss, lr);
                            st.Step++;
                            st.LossCurve.Add(new StepLoss(st.Step, epoch + 1, value, lr, taskValue));
                        }
                        else
                        {
                            pending.Add((st.Step + 1, epoch, lr, loss.detach().DetachFromDisposeScope(),
                                regularized ? taskLoss.detach().DetachFromDisposeScope() : null));
                            training.BackwardAndStep(loss, lr);
                            st.Step++;
                        }
                    }
                    // Outside the step's dispose scope: a hook may keep tensors across steps by moving
                    // them to "the outer scope", which must not be this step's.
                    training.AfterStep(st.Step);
                    if (pending.Count >= readEvery) ReadLosses();
                    clock.Stop();
                    st.Images += batch.Size;
                    if (ckpt is not null && o.CheckpointEverySteps > 0 && st.Step % o.CheckpointEverySteps == 0 && st.Step % perEpoch != 0)
                    {
                        ReadLosses();
                        lastGood = Save(ckpt, st, clock, trainable, optimizer, hooks);
                    }
                    progress?.Report(Progress(st, clock, epoch, total, null));
                }

            ReadLosses();
            var trainLoss = st.LossCurve.Where(s => s.Epoch == epoch + 1).Average(s => s.Loss);
            EvalMetrics? val = null;
            if (task.HasValidation && (o.EvalEveryEpoch || epoch == o.Epochs - 1))
                val = task.Evaluate(model, evalLoader, inputType, o);
            var em = new EpochMetrics(epoch + 1, st.Step, trainLoss, val);
            st.Epochs.Add(em);
            if (ckpt is not null) lastGood = Save(ckpt, st, clock, trainable, optimizer, hooks);
            progress?.Report(Progress(st, clock, epoch, total, em));
        }
        }
        finally
        {
            foreach (var p in pending) p.Loss.Dispose();
        }

        var final = st.Epochs.Count > 0 && st.Epochs[^1].Validation is EvalMetrics v ? v
            : task.Evaluate(model, task.HasValidation ? evalLoader : task.Loader(o, device, train: false, trainSet: true), inputType, o);
        // bf16 runs trained low-precision copies; the model keeps the float32 masters (what is saved)
        MixedPrecision.RestoreFloat32(model, optimizer);
        double seconds = st.TrainSeconds + clock.Elapsed.TotalSeconds;
        return new TrainResult(
            final, st.LossCurve.ToArray(), st.Epochs.ToArray(), st.Step, TimeSpan.FromSeconds(seconds),
            seconds > 0 ? st.Images / seconds : 0, memory.PeakMiB, memory.Source, o.Precision, device.ToString(),
            trainableCount, resumedFrom) { InitialValidation = st.InitialValidation };
    }

    static TrainingProgress Progress(RunState st, Stopwatch clock, int epoch, long total, EpochMetrics? end)
    {
        double seconds = st.TrainSeconds + clock.Elapsed.TotalSeconds;
        double perStep = st.Step > 0 ? seconds / st.Step : 0;
        var last = st.LossCurve.Count > 0 ? st.LossCurve[^1] : null;
        return new TrainingProgress(epoch + 1, (int)(total / st.StepsPerEpoch), st.Step, total, last?.Loss ?? double.NaN,
            last?.LearningRate ?? 0, seconds > 0 ? st.Images / seconds : 0, TimeSpan.FromSeconds(perStep * (total - st.Step)), end);
    }

    // ---- checkpoints -------------------------------------------------------------------------

    sealed class RunState
    {
        public long Step { get; set; }
        public long TotalSteps { get; set; }
        public int StepsPerEpoch { get; set; }
        public int Seed { get; set; }
        public int BatchSize { get; set; }
        public double TrainSeconds { get; set; }
        public long Images { get; set; }
        public List<StepLoss> LossCurve { get; set; } = [];
        public List<EpochMetrics> Epochs { get; set; } = [];
        public EvalMetrics? InitialValidation { get; set; }
    }

    static readonly JsonSerializerOptions json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    string Save(string path, RunState st, Stopwatch clock, (string name, Parameter parameter)[] trainable, FlatAdamW optimizer, IReadOnlyList<IStepHook> hooks)
    {
        var meta = new RunState
        {
            Step = st.Step, TotalSteps = st.TotalSteps, StepsPerEpoch = st.StepsPerEpoch, Seed = st.Seed, BatchSize = st.BatchSize,
            TrainSeconds = st.TrainSeconds + clock.Elapsed.TotalSeconds, Images = st.Images, LossCurve = st.LossCurve, Epochs = st.Epochs,
            InitialValidation = st.InitialValidation,
        };
        using var scope = NewDisposeScope(); // what hooks create for StateTensors()
        var tensors = new List<(string, Tensor)>();
        tensors.AddRange(trainable.Select(p => ("param." + p.name, (Tensor)p.parameter)));
        tensors.AddRange(model.named_buffers().Select(b => ("buffer." + b.name, b.buffer)));
        tensors.AddRange(optimizer.State().Select(s => ("optim." + s.Name, s.Value)));
        for (int i = 0; i < hooks.Count; i++)
            if (hooks[i] is IStatefulStepHook sh)
                tensors.AddRange(sh.StateTensors().Select(s => ($"hook{i}.{s.Name}", s.Value)));
        CheckpointFile.Write(path, JsonSerializer.Serialize(meta, json), tensors);
        return path;
    }

    RunState Load(string path, RunState expected, (string name, Parameter parameter)[] trainable, FlatAdamW optimizer, IReadOnlyList<IStepHook> hooks)
    {
        var (metaJson, tensors) = CheckpointFile.Read(path);
        try
        {
            var st = JsonSerializer.Deserialize<RunState>(metaJson, json)
                     ?? throw new InvalidDataException($"{path}: the checkpoint header is empty.");
            if (st.TotalSteps != expected.TotalSteps || st.StepsPerEpoch != expected.StepsPerEpoch || st.Seed != expected.Seed || st.BatchSize != expected.BatchSize)
                throw new InvalidOperationException(
                    $"{path} was written by a run with {st.TotalSteps} steps ({st.StepsPerEpoch} per epoch, batch {st.BatchSize}, seed {st.Seed}); " +
                    $"this run has {expected.TotalSteps} ({expected.StepsPerEpoch} per epoch, batch {expected.BatchSize}, seed {expected.Seed}). " +
                    "Resume with the same options and data, or delete the checkpoint to start over.");
            using var _ = no_grad();
            foreach (var (name, p) in trainable)
            {
                if (!tensors.TryGetValue("param." + name, out var t))
                    throw new InvalidDataException($"{path} has no value for the trainable parameter '{name}'; was it written for another model or tuning setup?");
                if (!t.shape.SequenceEqual(p.shape))
                    throw new InvalidDataException($"{path}: '{name}' has shape [{string.Join(",", t.shape)}], the model's is [{string.Join(",", p.shape)}].");
                p.copy_(t);
            }
            foreach (var (name, b) in model.named_buffers())
                if (tensors.TryGetValue("buffer." + name, out var t) && t.shape.SequenceEqual(b.shape)) b.copy_(t);
            var optim = tensors.Where(kv => kv.Key.StartsWith("optim.")).ToDictionary(kv => kv.Key["optim.".Length..], kv => kv.Value);
            optimizer.Load(st.Step, optim);
            for (int i = 0; i < hooks.Count; i++)
                if (hooks[i] is IStatefulStepHook sh)
                {
                    var prefix = $"hook{i}.";
                    sh.LoadState(tensors.Where(kv => kv.Key.StartsWith(prefix)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value));
                }
            return st;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: the checkpoint header is not valid ({e.Message}); delete it to start over.", e);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    // ---- tasks -------------------------------------------------------------------------------

    interface ITask
    {
        bool HasValidation { get; }
        DataLoader Loader(TrainOptions o, Device device, bool train, bool trainSet = false);
        Tensor Loss(nn.Module<Tensor, Tensor> model, Batch batch, ScalarType? inputType, TrainOptions o);
        EvalMetrics Evaluate(nn.Module<Tensor, Tensor> model, DataLoader loader, ScalarType? inputType, TrainOptions o);
    }

    static int EvalBatch(TrainOptions o) => o.EvalBatchSize > 0 ? o.EvalBatchSize : 2 * o.BatchSize;
    static Transforms EvalTransforms(TrainOptions o) => o.EvalTransforms ?? o.TrainTransforms.ForEvaluation();

    sealed class ClassificationTask(ImageDataset train, ImageDataset? validation) : ITask
    {
        public bool HasValidation => validation is not null;

        public DataLoader Loader(TrainOptions o, Device device, bool train_, bool trainSet) =>
            train_
                ? new DataLoader(train, o.BatchSize, shuffle: true, o.Seed, o.TrainTransforms, device, o.DropLast, o.Prefetch)
                : new DataLoader(trainSet || validation is null ? train : validation, EvalBatch(o), shuffle: false, 0, EvalTransforms(o), device, false, o.Prefetch);

        public Tensor Loss(nn.Module<Tensor, Tensor> model, Batch batch, ScalarType? inputType, TrainOptions o) =>
            F.cross_entropy(Evaluator.ClassifierForward(model, batch, inputType), batch.Targets);

        public EvalMetrics Evaluate(nn.Module<Tensor, Tensor> model, DataLoader loader, ScalarType? inputType, TrainOptions o) =>
            Evaluator.Classification(model, loader, inputType);
    }

    sealed class SegmentationTask(SegmentationDataset train, SegmentationDataset? validation) : ITask
    {
        public bool HasValidation => validation is not null;

        public DataLoader Loader(TrainOptions o, Device device, bool train_, bool trainSet) =>
            train_
                ? new DataLoader(train, o.BatchSize, shuffle: true, o.Seed, o.TrainTransforms, device, o.DropLast, o.Prefetch)
                : new DataLoader(trainSet || validation is null ? train : validation, EvalBatch(o), shuffle: false, 0, EvalTransforms(o), device, false, o.Prefetch);

        public Tensor Loss(nn.Module<Tensor, Tensor> model, Batch batch, ScalarType? inputType, TrainOptions o) =>
            Evaluator.SegmentationLoss(Evaluator.SegmenterForward(model, batch, inputType, o.UseBoxPrompts, train.NumClasses), batch.Targets);

        public EvalMetrics Evaluate(nn.Module<Tensor, Tensor> model, DataLoader loader, ScalarType? inputType, TrainOptions o) =>
            Evaluator.Segmentation(model, loader, train.NumClasses, inputType, o.UseBoxPrompts);
    }
}
