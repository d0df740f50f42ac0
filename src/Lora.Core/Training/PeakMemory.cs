using System.Runtime.InteropServices;

namespace Lora.Core.Training;

/// Peak memory of a run in MiB. On CPU: the process's peak resident set (VmHWM in
/// /proc/self/status; the peak is reset at start where the kernel allows). On CUDA: device memory
/// in use as NVML reports it (all processes on that GPU), sampled on a background timer.
/// Reports NaN where neither source is available.
public sealed class PeakMemory : IDisposable
{
    readonly Timer? timer;
    readonly IntPtr device;
    long peakBytes;

    public string Source { get; }

    PeakMemory(string source, int? cudaIndex)
    {
        Source = source;
        if (cudaIndex is int i && Nvml.TryDevice(i, out device))
        {
            Sample();
            timer = new Timer(_ => Sample(), null, 0, 50);
        }
    }

    /// Starts measuring; <paramref name="cudaIndex"/> is the GPU's index, or null on CPU.
    public static PeakMemory Start(int? cudaIndex)
    {
        if (cudaIndex is int i)
            return Nvml.TryDevice(i, out _) ? new PeakMemory("nvml", i) : new PeakMemory("none", null);
        ResetProcessPeak();
        return new PeakMemory(File.Exists("/proc/self/status") ? "VmHWM" : "none", null);
    }

    void Sample()
    {
        if (Nvml.Used(device) is long used)
        {
            long old;
            do { old = Interlocked.Read(ref peakBytes); } while (used > old && Interlocked.CompareExchange(ref peakBytes, used, old) != old);
        }
    }

    /// The peak so far in MiB.
    public double PeakMiB
    {
        get
        {
            if (Source == "nvml") { Sample(); return Interlocked.Read(ref peakBytes) / 1048576.0; }
            if (Source == "VmHWM") return ProcessPeakBytes() is long b ? b / 1048576.0 : double.NaN;
            return double.NaN;
        }
    }

    public void Dispose() => timer?.Dispose();

    /// Device memory in use on GPU <paramref name="index"/> in MiB (NVML: all processes, the CUDA
    /// contexts included), or null without NVML.
    public static double? DeviceUsedMiB(int index) =>
        Nvml.TryDevice(index, out var d) && Nvml.Used(d) is long used ? used / 1048576.0 : null;

    /// VmHWM of this process in bytes, or null off Linux.
    public static long? ProcessPeakBytes() => StatusBytes("VmHWM:");

    /// VmRSS of this process in bytes (what it holds now), or null off Linux.
    public static long? ProcessResidentBytes() => StatusBytes("VmRSS:");

    static long? StatusBytes(string field)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(field))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// Hands memory the process has freed back to the system (a .NET collection for tensors no one
    /// holds, then glibc's malloc_trim), so that the resident set taken as a run's baseline is what
    /// is live, not what earlier runs in the same process left in the allocator's free lists: without
    /// it every run after the first reads a peak near 0 above its baseline. No effect off glibc.
    public static void ReleaseFreedMemory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        try { malloc_trim(0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException) { }
    }

    [DllImport("libc.so.6", EntryPoint = "malloc_trim")] static extern int malloc_trim(nuint pad);

    /// Writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
    static void ResetProcessPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    static class Nvml
    {
        const string Lib = "libnvidia-ml.so.1";
        static bool? ready;

        [StructLayout(LayoutKind.Sequential)]
        struct Memory { public ulong Total, Free, Used; }

        [DllImport(Lib)] static extern int nvmlInit_v2();
        [DllImport(Lib)] static extern int nvmlDeviceGetHandleByIndex_v2(uint index, out IntPtr device);
        [DllImport(Lib)] static extern int nvmlDeviceGetMemoryInfo(IntPtr device, out Memory memory);

        public static bool TryDevice(int index, out IntPtr device)
        {
            device = IntPtr.Zero;
            try
            {
                ready ??= nvmlInit_v2() == 0;
                return ready.Value && nvmlDeviceGetHandleByIndex_v2((uint)index, out device) == 0;
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
            {
                ready = false;
                return false;
            }
        }

        public static long? Used(IntPtr device)
        {
            if (device == IntPtr.Zero) return null;
            try { return nvmlDeviceGetMemoryInfo(device, out var m) == 0 ? (long)m.Used : null; }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
        }
    }
}
