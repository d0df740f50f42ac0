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

    /// The learning rate of the 0-based (optimiser) step: linear warm-up, then the schedule: cosine
    /// or linear decay to the minimum, constant, or step decay by DecayRate every DecayEpochs epochs
    /// (counted from step 0, as timm's step scheduler).
    public static double LearningRateAt(TrainOptions o, long step, long totalSteps)
    {
        if (step < o.WarmupSteps) return o.LearningRate * (step + 1) / o.WarmupSteps;
        long decay = Math.Max(1, totalSteps - o.WarmupSteps);
        double progress = Math.Min(1.0, (double)(step - o.WarmupSteps) / decay);
        switch (o.Schedule)
        {
            case LrSchedule.Linear: return o.LearningRate + (o.MinLearningRate - o.LearningRate) * progress;
            case LrSchedule.Constant: return o.LearningRate;
            case LrSchedule.Step:
                long perEpoch = Math.Max(1, totalSteps / o.Epochs);
                return o.LearningRate * Math.Pow(o.DecayRate, step / (perEpoch * o.DecayEpochs));
            default: return o.MinLearningRate + 0.5 * (o.LearningRate - o.MinLearningRate) * (1 + Math.Cos(Math.PI * progress));
        }
    }

    /// Higher is better: accuracy, DICE, or the negated loss.
    static double Score(EvalMetrics m) => m.Top1 ?? m.Dice ?? -m.Loss;

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
        // steps are optimiser steps: `accum` batches each (the last group of an epoch may be shorter)
        int accum = o.GradAccumulation, batches = loader.BatchesPerEpoch;
        int perEpoch = (batches + accum - 1) / accum;
        long total = (long)perEpoch * o.Epochs;

        var hooks = training.Hooks;
        foreach (var h in hooks) h.Begin(total);

        var st = new RunState { TotalSteps = total, StepsPerEpoch = perEpoch, Seed = o.Seed, BatchSize = o.BatchSize };
        long? resumedFrom = null;
        var ckpt = CheckpointPath;
        string? lastGood = null;
        // the best epoch's weights (trainable parameters and buffers), when the best epoch is reported
        var best = new Dictionary<string, Tensor>();
        if (resume && ckpt is not null && File.Exists(ckpt))
        {
            st = Load(ckpt, st, trainable, optimizer, hooks, best);
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
        // the weighted losses of an accumulation group's earlier batches (and their task losses)
        Tensor? groupLoss = null, groupTask = null;
        static Tensor Accumulate(Tensor? sum, Tensor loss)
        {
            var next = sum is null ? loss.detach().clone() : sum.Plus(loss.detach());
            sum?.Dispose();
            return next.DetachFromDisposeScope();
        }
        model.train();
        try
        {
        for (int epoch = (int)(st.Step / perEpoch); epoch < o.Epochs && !st.StoppedEarly; epoch++)
        {
            int start = (int)(st.Step - (long)epoch * perEpoch) * accum;
            foreach (var batch in loader.Epoch(epoch, start))
                using (batch)
                {
                    cancel.ThrowIfCancellationRequested();
                    clock.Start();
                    int micro = batch.Index % accum;
                    bool stepNow = micro == accum - 1 || batch.Index == batches - 1;
                    using (var scope = NewDisposeScope())
                    {
                        long stepSeed = micro == 0 ? Seeded.Mix(o.Seed, st.Step, 0xd0) : Seeded.Mix(o.Seed, st.Step, micro, 0xd0);
                        using (torch.random.manual_seed(stepSeed)) { }
                        if (device.type == DeviceType.CUDA) torch.cuda.manual_seed_all(stepSeed);
                        double lr = LearningRateAt(o, st.Step, total);
                        var taskLoss = task.Loss(model, batch, inputType, o);
                        var loss = training.WithExtraLoss(taskLoss);
                        // a regulariser was added (AdaLoRA): the task loss is kept apart for the curves
                        var regularized = !ReferenceEquals(loss, taskLoss);
                        if (accum > 1)
                        {
                            // this batch's share of the group's items: the group's loss is their mean
                            int groupStart = (batch.Index / accum) * accum * o.BatchSize;
                            int groupItems = Math.Min(loader.Count, groupStart + accum * o.BatchSize) - groupStart;
                            using Scalar share = (double)batch.Size / groupItems;
                            loss = loss.mul(share);
                            if (regularized) taskLoss = taskLoss.mul(share);
                        }
                        if (!stepNow)
                        {
                            groupLoss = Accumulate(groupLoss, loss);
                            if (regularized) groupTask = Accumulate(groupTask, taskLoss);
                            loss.backward();
                        }
                        else
                        {
                            var whole = groupLoss is null ? loss : groupLoss.Plus(loss.detach());
                            var wholeTask = !regularized ? null : groupTask is null ? taskLoss : groupTask.Plus(taskLoss.detach());
                            if (readEvery == 1)
                            {
                                // read before the update: a diverged step changes nothing
                                double value = whole.item<float>();
                                if (!double.IsFinite(value))
                                    throw new TrainingDivergedException(st.Step + 1, epoch, value, lastGood);
                                double? taskValue = wholeTask?.item<float>();
                                loss.backward();
                                training.ClipAndStep(lr);
                                st.Step++;
                                st.LossCurve.Add(new StepLoss(st.Step, epoch + 1, value, lr, taskValue));
                            }
                            else
                            {
                                pending.Add((st.Step + 1, epoch, lr, whole.detach().DetachFromDisposeScope(), wholeTask?.detach().DetachFromDisposeScope()));
                                loss.backward();
                                training.ClipAndStep(lr);
                                st.Step++;
                            }
                            groupLoss?.Dispose();
                            groupLoss = null;
                            groupTask?.Dispose();
                            groupTask = null;
                        }
                    }
                    if (stepNow)
                    {
                        // Outside the step's dispose scope: a hook may keep tensors across steps by moving
                        // them to "the outer scope", which must not be this step's.
                        training.AfterStep(st.Step);
                        if (pending.Count >= readEvery) ReadLosses();
                    }
                    clock.Stop();
                    st.Images += batch.Size;
                    if (stepNow && ckpt is not null && o.CheckpointEverySteps > 0 && st.Step % o.CheckpointEverySteps == 0 && st.Step % perEpoch != 0)
                    {
                        ReadLosses();
                        lastGood = Save(ckpt, st, clock, trainable, optimizer, hooks, best);
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
            if (val is not null && (o.SelectBest || o.Patience is not null))
            {
                if (st.BestEpoch == 0 || Score(val) > st.BestScore)
                {
                    st.BestEpoch = epoch + 1;
                    st.BestScore = Score(val);
                    if (o.SelectBest) Snapshot(best, trainable, optimizer);
                }
                else if (o.Patience is int patience && epoch + 1 - st.BestEpoch >= patience) st.StoppedEarly = true;
            }
            if (ckpt is not null) lastGood = Save(ckpt, st, clock, trainable, optimizer, hooks, best);
            progress?.Report(Progress(st, clock, epoch, total, em));
        }
        }
        finally
        {
            foreach (var p in pending) { p.Loss.Dispose(); p.Task?.Dispose(); }
            groupLoss?.Dispose();
            groupTask?.Dispose();
        }

        int? selected = o.SelectBest && st.BestEpoch > 0 ? st.BestEpoch : null;
        var final = selected is int sel ? st.Epochs[sel - 1].Validation!
            : st.Epochs.Count > 0 && st.Epochs[^1].Validation is EvalMetrics v ? v
            : task.Evaluate(model, task.HasValidation ? evalLoader : task.Loader(o, device, train: false, trainSet: true), inputType, o);
        // bf16 runs trained low-precision copies; the model keeps the float32 masters (what is saved)
        MixedPrecision.RestoreFloat32(model, optimizer);
        if (selected is not null) Restore(best);
        foreach (var t in best.Values) t.Dispose();
        double seconds = st.TrainSeconds + clock.Elapsed.TotalSeconds;
        return new TrainResult(
            final, st.LossCurve.ToArray(), st.Epochs.ToArray(), st.Step, TimeSpan.FromSeconds(seconds),
            seconds > 0 ? st.Images / seconds : 0, memory.PeakMiB, memory.Source, o.Precision, device.ToString(),
            trainableCount, resumedFrom, selected, st.StoppedEarly) { InitialValidation = st.InitialValidation };
    }

    /// Copies of the trainable parameters (the float32 masters of a bf16 run) and the buffers
    /// (batch-norm statistics), replacing the previous copies.
    void Snapshot(Dictionary<string, Tensor> best, (string name, Parameter parameter)[] trainable, FlatAdamW optimizer)
    {
        foreach (var t in best.Values) t.Dispose();
        best.Clear();
        var masters = optimizer.MasterWeights().ToDictionary(m => m.Name, m => m.Value);
        using var _ = no_grad();
        foreach (var (name, p) in trainable)
            best["param." + name] = (masters.TryGetValue(name, out var m) ? m : (Tensor)p).detach().clone().DetachFromDisposeScope();
        foreach (var (name, b) in model.named_buffers())
            best["buffer." + name] = b.detach().clone().DetachFromDisposeScope();
    }

    /// Puts the snapshot back into the model.
    void Restore(Dictionary<string, Tensor> best)
    {
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
            if (best.TryGetValue("param." + name, out var t)) p.copy_(t);
        foreach (var (name, b) in model.named_buffers())
            if (best.TryGetValue("buffer." + name, out var t)) b.copy_(t);
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
        /// 1-based; 0 until an epoch is scored (early stopping, best-epoch selection)
        public int BestEpoch { get; set; }
        public double BestScore { get; set; }
        public bool StoppedEarly { get; set; }
    }

    static readonly JsonSerializerOptions json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    string Save(string path, RunState st, Stopwatch clock, (string name, Parameter parameter)[] trainable, FlatAdamW optimizer, IReadOnlyList<IStepHook> hooks,
                Dictionary<string, Tensor> best)
    {
        var meta = new RunState
        {
            Step = st.Step, TotalSteps = st.TotalSteps, StepsPerEpoch = st.StepsPerEpoch, Seed = st.Seed, BatchSize = st.BatchSize,
            TrainSeconds = st.TrainSeconds + clock.Elapsed.TotalSeconds, Images = st.Images, LossCurve = st.LossCurve, Epochs = st.Epochs,
            InitialValidation = st.InitialValidation,
            BestEpoch = st.BestEpoch, BestScore = st.BestScore, StoppedEarly = st.StoppedEarly,
        };
        using var scope = NewDisposeScope(); // what hooks create for StateTensors()
        var tensors = new List<(string, Tensor)>();
        tensors.AddRange(trainable.Select(p => ("param." + p.name, (Tensor)p.parameter)));
        tensors.AddRange(model.named_buffers().Select(b => ("buffer." + b.name, b.buffer)));
        tensors.AddRange(optimizer.State().Select(s => ("optim." + s.Name, s.Value)));
        tensors.AddRange(best.Select(kv => ("best." + kv.Key, kv.Value)));
        for (int i = 0; i < hooks.Count; i++)
            if (hooks[i] is IStatefulStepHook sh)
                tensors.AddRange(sh.StateTensors().Select(s => ($"hook{i}.{s.Name}", s.Value)));
        CheckpointFile.Write(path, JsonSerializer.Serialize(meta, json), tensors);
        return path;
    }

    RunState Load(string path, RunState expected, (string name, Parameter parameter)[] trainable, FlatAdamW optimizer, IReadOnlyList<IStepHook> hooks,
                  Dictionary<string, Tensor> best)
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
            foreach (var (key, t) in tensors.Where(kv => kv.Key.StartsWith("best.")))
                best[key["best.".Length..]] = t.clone().DetachFromDisposeScope();
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
            Losses.CrossEntropy(Evaluator.ClassifierForward(model, batch, inputType), batch.Targets, o.LabelSmoothing);

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
