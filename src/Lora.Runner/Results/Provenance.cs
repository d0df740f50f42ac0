using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;

namespace Lora.Runner;

/// <summary>Where a result came from: commit, package versions, device, command line, and what
/// decides the last bits of CPU numbers (processor and its instruction set, intra-op threads).</summary>
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

    /// Two runs agree bit for bit only on the same kernels, which libtorch's oneDNN and MKL pick by
    /// the processor's widest vector instructions and split by the thread count: recorded so that a
    /// difference can be told apart. onednn_max_cpu_isa is a cap the user set (null: none).
    public static JsonObject Numerics()
    {
        var (model, flags) = Cpu();
        return new()
        {
            ["cpu"] = model,
            ["cpu_isa"] = flags.Contains("avx512f") ? "avx512" : flags.Contains("avx2") ? "avx2" : flags.Contains("sse4_1") ? "sse4.1" : null,
            ["intra_op_threads"] = TorchSharp.torch.get_num_threads(),
            ["onednn_max_cpu_isa"] = Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA"),
        };
    }

    /// The processor's model name and feature flags (/proc/cpuinfo; elsewhere the architecture, no flags).
    static (string Model, HashSet<string> Flags) Cpu()
    {
        string? model = null;
        var flags = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                {
                    var colon = line.IndexOf(':');
                    if (colon < 0) continue;
                    var key = line[..colon].Trim();
                    if (key == "model name") model ??= line[(colon + 1)..].Trim();
                    else if (key == "flags" && flags.Count == 0) flags.UnionWith(line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
                    if (model is not null && flags.Count > 0) break;
                }
        }
        catch (IOException) { }
        return (model ?? System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString(), flags);
    }
}
