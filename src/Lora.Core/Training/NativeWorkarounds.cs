using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// Work-arounds for the native libraries, applied once before the first tensor operation.
///
/// oneDNN's AVX-512 convolution backward kernels in the libtorch 2.10 CPU build return garbage
/// (often NaN) weight gradients for some small stacked convolutions on AVX-512 machines (seen here:
/// conv 1→8 then 8→1/4/8 channels, 3×3, 32×32; a UNet diverges in 2 of 3 runs). Capping oneDNN at
/// AVX2 gives exact, repeatable gradients. oneDNN reads ONEDNN_MAX_CPU_ISA from the process
/// environment once, at its first use, so it must be set natively (.NET's
/// Environment.SetEnvironmentVariable does not reach the C environment on Linux) before any
/// convolution runs. A value the user set is kept.
///
/// With oneDNN capped, bf16 convolutions on the CPU take a path that first asks NNPACK, which fails on
/// CPUs it does not support and logs "Could not initialize NNPACK! Reason: Unsupported hardware." at
/// every call (hundreds of lines in a bf16 run). c10's log level is raised to ERROR, as
/// TORCH_CPP_LOG_LEVEL=ERROR does in PyTorch (libtorch reads that variable only when Python starts
/// it); a TORCH_CPP_LOG_LEVEL the user set keeps c10's default. PyTorch's warnings (TORCH_WARN) are
/// not c10 log lines and still show.
public static class NativeWorkarounds
{
    /// The instruction set oneDNN is capped at (SSE4.1: AVX2 still showed wrong gradients in 7 of 200 trials).
    public const string Isa = "SSE41";

    static int applied;

    [DllImport("libc", EntryPoint = "setenv")]
    static extern int SetEnv(string name, string value, int overwrite);

    public static void Apply()
    {
        if (Interlocked.Exchange(ref applied, 1) == 1) return;
        if (!OperatingSystem.IsLinux()) return;
        if (Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA") is null)
        {
            try { SetEnv("ONEDNN_MAX_CPU_ISA", Isa, 0); }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        }
        if (Environment.GetEnvironmentVariable("TORCH_CPP_LOG_LEVEL") is null) SetC10LogLevel(2);
    }

    /// Sets c10's minimum log level (0 INFO, 1 WARNING, 2 ERROR); false when libc10 is not found.
    public static bool SetC10LogLevel(int level)
    {
        torch.InitializeDeviceType(DeviceType.CPU); // loads libtorch, and with it libc10
        if (!NativeLibrary.TryLoad("libc10.so", out var c10)) return false; // already loaded: found by soname
        if (!NativeLibrary.TryGetExport(c10, "FLAGS_caffe2_log_level", out var flag)) return false;
        Marshal.WriteInt32(flag, level);
        return true;
    }
}
