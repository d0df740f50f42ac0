using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;

namespace Lora.Runner;

/// <summary>Where a result came from: commit, package versions, device, command line, and what
/// decides the last bits of CPU numbers (processor, intra-op threads, oneDNN's instruction-set cap).</summary>
public static class Provenance
{
    public static string? GitCommit()
    {
        try
        {
            var psi = new ProcessStartInfo("git", "rev-parse HEAD") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(psi);
            if (p is null) return null;
            var output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit(5000);
            return p.ExitCode == 0 && output.Length >= 7 ? output : null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException) { return null; }
    }

    static string VersionOf(Assembly a) =>
        a.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
        ?? a.GetName().Version?.ToString() ?? "?";

    public static JsonObject Packages() => new()
    {
        ["dotnet"] = Environment.Version.ToString(),
        ["lora"] = Lora.Dsl.Version.value,
        ["TorchSharp"] = VersionOf(typeof(TorchSharp.torch).Assembly),
        ["FSharp.Core"] = VersionOf(typeof(Microsoft.FSharp.Core.Unit).Assembly),
    };

    public static JsonObject Describe(string device, string commandLine) => new()
    {
        ["commit"] = GitCommit(),
        ["packages"] = Packages(),
        ["device"] = device,
        ["command"] = commandLine,
        ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
        ["numerics"] = Numerics(),
        ["started"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
    };

    /// Two runs agree bit for bit only on the same kernels: the same processor model, thread count
    /// and oneDNN cap (see NativeWorkarounds); recorded so that a difference can be told apart.
    public static JsonObject Numerics() => new()
    {
        ["cpu"] = CpuModel(),
        ["intra_op_threads"] = TorchSharp.torch.get_num_threads(),
        ["onednn_max_cpu_isa"] = Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA") ?? Lora.Core.Training.NativeWorkarounds.Isa,
    };

    static string CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is var i and > 0)
                        return line[(i + 1)..].Trim();
        }
        catch (IOException) { }
        return System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
    }
}
