using TorchSharp;

namespace Lora.Core.Training;

/// Device names as the command line and TrainOptions take them ("cpu", "cuda", "cuda:N").
public static class Devices
{
    /// Throws a one-line NotSupportedException when CUDA is asked for and TorchSharp cannot use it,
    /// instead of the native stack trace the first CUDA tensor would give.
    public static void Require(string device)
    {
        if (device.StartsWith("cuda", StringComparison.Ordinal) && !torch.cuda.is_available())
            throw new NotSupportedException(
                $"device '{device}': CUDA is not available to TorchSharp here (torch.cuda.is_available() is false: " +
                "a CPU-only libtorch, or no GPU or driver visible). Use --device cpu, or run on a GPU machine as docs/benchmarks.md shows.");
        if (device != "cpu" && !device.StartsWith("cuda", StringComparison.Ordinal))
            throw new ArgumentException($"device '{device}': use cpu, cuda or cuda:N.");
    }
}
