using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Lora.CommandLine;
using Lora.Dsl;

namespace Lora.Runner;

/// Runs one `lora bench` method in a fresh process of this program and returns its JSON line. On a
/// GPU this is what makes peak memory per method honest: TorchSharp cannot empty the CUDA caching
/// allocator, so in one process a method would find (and NVML would count) the blocks an earlier
/// method left reserved. The reference script empties the cache between its modes.
static class BenchProcess
{
    public static JsonObject Run(BenchOptions o, string method, TextWriter stderr)
    {
        var psi = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        psi.ArgumentList.Add(typeof(BenchProcess).Assembly.Location);
        foreach (var a in Arguments(o, method)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
        var err = p.StandardError.ReadToEndAsync();
        var lines = new List<string>();
        while (p.StandardOutput.ReadLine() is string line) lines.Add(line);
        p.WaitForExit();
        var errText = err.Result;
        if (errText.Length > 0) stderr.Write(errText);
        var result = lines.Where(l => l.TrimStart().StartsWith('{')).Select(l => JsonNode.Parse(l) as JsonObject).LastOrDefault(j => j is not null);
        if (result is not null) return result;
        var last = errText.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "";
        return BenchCommand.ErrorJson(o.Model, method,
            $"the benchmark process exited with code {p.ExitCode} and printed no result{(last.Length > 0 ? ": " + last : "")}");
    }

    /// The child's command line: the same options, one method, JSON, in its own process.
    static IEnumerable<string> Arguments(BenchOptions o, string method)
    {
        yield return "bench";
        yield return "--model"; yield return o.Model;
        foreach (var (flag, value) in new[] { ("--batch", o.Batch), ("--img", o.Img), ("--classes", o.Classes), ("--rank", o.Rank), ("--steps", o.Steps), ("--warmup", o.Warmup) })
            if (value.HasValue) { yield return flag; yield return value.Value.ToString(System.Globalization.CultureInfo.InvariantCulture); }
        if (o.Device is not null) { yield return "--device"; yield return o.Device; }
        if (o.Precision is not null) { yield return "--precision"; yield return o.Precision; }
        if (o.ModelConfig is not null) { yield return "--model-config"; yield return Path.GetFullPath(o.ModelConfig); }
        if (!o.Targets.IsEmpty) { yield return "--targets"; foreach (var t in o.Targets) yield return t; }
        yield return "--methods"; yield return method;
        yield return "--json";
        yield return "--in-process";
    }

    /// The dotnet host running this program (also when it was started through an apphost, or is a
    /// test process that called the command in-process).
    static string DotnetHost()
    {
        var exe = Environment.ProcessPath;
        if (exe is not null && Path.GetFileNameWithoutExtension(exe) == "dotnet") return exe;
        var host = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", "..", "dotnet"));
        return File.Exists(host) ? host : "dotnet";
    }
}
