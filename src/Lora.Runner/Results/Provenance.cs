using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;

namespace Lora.Runner;

/// <summary>Where a result came from: commit, package versions, device, command line.</summary>
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
        ["started"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
    };
}
