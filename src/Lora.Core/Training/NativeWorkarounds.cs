using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// Work-arounds for the native libraries, applied once before the first tensor operation.
///
/// c10's log level is raised to ERROR, as TORCH_CPP_LOG_LEVEL=ERROR does in PyTorch (libtorch
/// reads that variable only when Python starts it): bf16 convolutions on some CPUs ask NNPACK
/// first, which logs "Could not initialize NNPACK! Reason: Unsupported hardware." at every call.
/// A TORCH_CPP_LOG_LEVEL the user set keeps c10's default. PyTorch's warnings (TORCH_WARN) are
/// not c10 log lines and still show.
///
/// oneDNN picks its own instruction set (a user's ONEDNN_MAX_CPU_ISA still caps it). Until
/// 2026-12-01 it was capped at SSE4.1: first against wrong fp32 conv weight gradients on AVX-512,
/// whose cause was native object lifetimes (see HeldScalars; fp32 conv gradients now equal fp64's at
/// the default ISA, also under forced collections, GcStressTests), then for reproducibility, until
/// a last-bit difference between two processes it was thought to cure recurred with the cap
/// (docs/reliability.md, "Float noise between processes"). The cap made a ResNet-18 LoRA training
/// step 2.3× slower on this project's AVX-512 CPUs.
public static class NativeWorkarounds
{
    static int applied;

    public static void Apply()
    {
        if (Interlocked.Exchange(ref applied, 1) == 1) return;
        if (!OperatingSystem.IsLinux()) return;
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
