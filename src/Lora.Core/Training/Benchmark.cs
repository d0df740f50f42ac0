using Lora.Core.Data;
using System.Diagnostics;
using Lora.Core.Models;
using Lora.Core.Tuning;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Lora.Core.Training;

/// What one benchmark times: a zoo model at one shape, on one device, in one precision.
public sealed record BenchSetup
{
    public required string Model { get; init; }
    /// Extra model arguments (num_classes and img_size are set from <see cref="Classes"/> and <see cref="ImageSize"/>).
    public ModelArgs ModelArgs { get; init; } = ModelArgs.Empty;
    public int Batch { get; init; } = 64;
    public int ImageSize { get; init; } = 224;
    public int Classes { get; init; } = 100;
    public int Rank { get; init; } = 8;
    /// "cpu", "cuda" or "cuda:N".
    public string Device { get; init; } = "cpu";
    public int Steps { get; init; } = 20;
    public int Warmup { get; init; } = 5;
    public Precision Precision { get; init; } = Precision.BFloat16;
}

/// One method's figures, named as peft_anchor.py prints them (see docs/benchmarks.md).
public sealed record BenchResult(
    string Method, string Model, string Device, Precision Precision, int Batch, int ImageSize, int Rank,
    double StepMs, double TrainImagesPerSecond, double InferImagesPerSecond, bool InferMerged,
    double PeakMiB, string PeakSource, long Trainable, long Total)
{
    /// On CUDA: the whole device's peak (NVML), before the CUDA context's own memory is taken off
    /// (<see cref="PeakMiB"/> is the memory above it). NaN elsewhere.
    public double PeakDeviceMiB { get; init; } = double.NaN;
}

/// Times training steps and inference of a tuning method on one model with random data (`lora
/// bench` configures the methods as the reference script does: timm + PEFT, ../shared/gpu/peft_anchor.py), with the
/// training step of <see cref="Trainer"/> (<see cref="TrainingStep"/>: FlatAdamW, bf16 frozen weights).
public static class Benchmark
{
    /// The reference script's AdaLoRA schedule length (total_step=1000): a benchmark's few steps
    /// stay in its warm-up, as there.
    public const long ReferenceTotalSteps = 1000;

    /// Builds the model, applies the method to it (<paramref name="apply"/>: the tuned model, or null
    /// when the method adds no adapter), trains Warmup + Steps steps on one random batch (timing the
    /// last Steps), then times eval-mode inference (adapters merged where they can be).
    public static BenchResult Run(string method, Func<nn.Module, TunedModel?> apply, BenchSetup s)
    {
        Devices.Require(s.Device);
        var device = torch.device(s.Device);
        bool cuda = device.type == DeviceType.CUDA;
        void Sync() { if (cuda) torch.cuda.synchronize(device); }
        // as the reference script: TF32 for whatever runs in fp32 (the trainable layers, --precision fp32)
        if (cuda) { torch.backends.cuda.matmul.allow_tf32 = true; torch.backends.cudnn.allow_tf32 = true; }
        // Device memory in use once the CUDA context exists and before the model: what NVML counts
        // that is not this method's (context, cuBLAS/cuDNN handles made by earlier methods of this
        // process). peak_mib is the peak above it, comparable to PyTorch's max_memory_reserved().
        double contextMiB = 0;
        if (cuda)
        {
            using (var probe = torch.zeros(1, device: device)) Sync();
            contextMiB = PeakMemory.DeviceUsedMiB(Math.Max(0, device.index)) ?? 0;
        }

        torch.manual_seed(0);
        var args = s.ModelArgs.With("num_classes", (long)s.Classes).With("img_size", (long)s.ImageSize);
        using var model = Zoo.Create(s.Model, args, device);
        var tuned = apply(model);
        var summary = ParameterSummary.Of(model);
        var exactWeights = MixedPrecision.Apply(model, s.Precision);

        // torch.optim.AdamW's defaults (lr 1e-4 as the reference, weight decay 0.01), no clipping
        using var step = new TrainingStep(model, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, clipGradNorm: 0, masters: exactWeights);
        foreach (var w in exactWeights.Values) w.Dispose();
        foreach (var h in step.Hooks) h.Begin(ReferenceTotalSteps);
        using var x0 = torch.randn(s.Batch, 3, s.ImageSize, s.ImageSize, device: device);
        using var x = s.Precision == Precision.BFloat16 ? x0.to(ScalarType.BFloat16) : x0.alias();
        using var y = torch.randint(0, s.Classes, [s.Batch], device: device);

        // fp32 inputs cast per step and the classifier's loss, as the Trainer's classification task
        var batch = new Batch { Inputs = x0, Targets = y };
        var inputType = Evaluator.InputType(s.Precision);
        model.train();
        long global = 0;
        void TrainStep()
        {
            using (NewDisposeScope())
            {
                var loss = step.WithExtraLoss(F.cross_entropy(Evaluator.ClassifierForward(model, batch, inputType), y));
                step.BackwardAndStep(loss, 1e-4);
            }
            step.AfterStep(++global);
        }
        for (int i = 0; i < s.Warmup; i++) TrainStep();
        Sync();
        var times = new List<double>();
        double peak, devicePeak = double.NaN;
        string source;
        using (var memory = PeakMemory.Start(cuda ? Math.Max(0, device.index) : null))
        {
            for (int i = 0; i < s.Steps; i++)
            {
                var t = Stopwatch.GetTimestamp();
                TrainStep();
                Sync();
                times.Add(Stopwatch.GetElapsedTime(t).TotalSeconds);
            }
            peak = memory.PeakMiB;
            source = memory.Source;
            if (source == "nvml") { devicePeak = peak; peak -= contextMiB; }
        }
        times.Sort();
        double median = times.Count > 0 ? times[times.Count / 2] : double.NaN;

        model.eval();
        bool merged = tuned?.ActiveAdapter is { } active && tuned.Configs[active].Method.NotMergeable is null;
        if (merged) tuned!.Merge();
        double inferSeconds;
        using (no_grad())
        {
            int warm = Math.Max(1, Math.Min(3, s.Warmup)), runs = Math.Max(1, (s.Steps + 1) / 2);
            for (int i = 0; i < warm; i++) model.forward(x).Dispose();
            Sync();
            var t = Stopwatch.GetTimestamp();
            for (int i = 0; i < runs; i++) model.forward(x).Dispose();
            Sync();
            inferSeconds = Stopwatch.GetElapsedTime(t).TotalSeconds / runs;
        }

        return new BenchResult(method, s.Model, device.ToString(), s.Precision, s.Batch, s.ImageSize, s.Rank,
            median * 1e3, s.Batch / median, s.Batch / inferSeconds, merged, peak, source, summary.Trainable, summary.Total)
        { PeakDeviceMiB = devicePeak };
    }
}
