using System.Runtime.InteropServices;

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
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA") is not null) return;
        try { SetEnv("ONEDNN_MAX_CPU_ISA", Isa, 0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }
}
