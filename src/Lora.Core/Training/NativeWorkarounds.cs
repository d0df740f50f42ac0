using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// Work-arounds for the native libraries, applied once before the first tensor operation.
///
/// oneDNN is capped at SSE4.1 (ONEDNN_MAX_CPU_ISA) unless the user sets that variable; the value
/// ALL lifts the cap. The cap was first set after fp32 convolution weight gradients came out wrong
/// or NaN on an AVX-512 machine; that cause was native object lifetimes, not oneDNN (tensors and
/// implicit Scalars finalised by the garbage collector mid-call, see HeldScalars): with every
/// native object held, fp32 conv gradients equal fp64's at the default ISA, also under forced
/// collections (GcStressTests). The cap stays so that committed results reproduce: it selects
/// the kernels they were computed with (uncapped, the tiny test plan's final loss moves in the 8th
/// digit). It was once also thought to cure a rare last-bit difference between two processes; that
/// difference has since recurred with the cap (docs/reliability.md, "Float noise between processes").
/// It costs 11-27 % of a ConvNeXt-T CPU training step (measured for issue 17). oneDNN reads the variable
/// from the C environment once, at its first use, so it is set natively (.NET's
/// Environment.SetEnvironmentVariable does not reach it on Linux) before any convolution runs.
///
/// c10's log level is raised to ERROR, as TORCH_CPP_LOG_LEVEL=ERROR does in PyTorch (libtorch
/// reads that variable only when Python starts it): bf16 convolutions on some CPUs ask NNPACK
/// first, which logs "Could not initialize NNPACK! Reason: Unsupported hardware." at every call.
/// A TORCH_CPP_LOG_LEVEL the user set keeps c10's default. PyTorch's warnings (TORCH_WARN) are
/// not c10 log lines and still show.
public static class NativeWorkarounds
{
    /// The instruction set oneDNN is capped at when the user sets none.
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
