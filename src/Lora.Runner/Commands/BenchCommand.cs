using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lora.Core.Models;
using Lora.Core.Training;
using Lora.Conversion;
using Lora.CommandLine;
using Lora.Dsl;
using Spectre.Console;
using CorePrecision = Lora.Core.Training.Precision;

namespace Lora.Runner;

/// `lora bench`: training and inference throughput and peak memory of each method on one model with
/// random data, one JSON line per method (the fields of ../shared/gpu/peft_anchor.py) or a table.
public static class BenchCommand
{
    public static int Run(BenchOptions o, TextWriter stdout, TextWriter stderr)
    {
        var methods = o.Methods.ToList();
        if (methods.Count == 0) methods = ["full", "lora", "lora-all", "adalora"];
        var unknown = methods.Where(m => !BenchMethods.names.Contains(m)).ToList();
        var errors = new List<string>();
        if (unknown.Count > 0) errors.Add($"--methods: unknown method(s) {string.Join(", ", unknown)}; known: {string.Join(", ", BenchMethods.names)}");
        if (!Zoo.Names.Contains(o.Model))
            try { Zoo.Create(o.Model, device: TorchSharp.torch.META).Dispose(); }
            catch (ArgumentException e) { errors.Add($"--model: {e.Message}"); }
        void Positive(string name, int? v, int min = 1) { if (v is int x && x < min) errors.Add($"{name} must be at least {min}, got {x}"); }
        Positive("--batch", o.Batch); Positive("--img", o.Img); Positive("--classes", o.Classes); Positive("--rank", o.Rank);
        Positive("--steps", o.Steps); Positive("--warmup", o.Warmup, 0);
        if (errors.Count > 0)
        {
            foreach (var e in errors) stderr.WriteLine($"lora bench: {e}");
            return 2;
        }
        var device = o.Device ?? "cpu";
        try { Devices.Require(device); }
        catch (NotSupportedException e) { stderr.WriteLine($"lora bench: {e.Message}"); return 1; }

        var setup = new BenchSetup
        {
            Model = o.Model,
            ModelArgs = ModelSource.Args(o.ModelConfig),
            Batch = o.Batch ?? 64, ImageSize = o.Img ?? 224, Classes = o.Classes ?? 100, Rank = o.Rank ?? 8,
            Device = device, Steps = o.Steps ?? 20, Warmup = o.Warmup ?? 5,
            // bf16 by default on CUDA (the reference runs under bf16 autocast); fp32 on CPU, where
            // libtorch's bf16 kernels are slower than fp32 on CPUs without native bf16
            Precision = (o.Precision ?? (device == "cpu" ? "fp32" : "bf16")) == "fp32" ? CorePrecision.Float32 : CorePrecision.BFloat16,
        };
        var results = new List<BenchResult>();
        int failed = 0;
        bool isolate = (o.Isolate ?? device != "cpu") && methods.Count > 1;
        foreach (var m in methods)
        {
            var (json, result) = isolate ? FromChild(BenchProcess.Run(o, m, stderr)) : InProcess(m, setup, o.Targets, stderr);
            if (result is null)
            {
                failed++;
                // one line per failed method, like peft_anchor.py's error lines
                if (!o.Json) stderr.WriteLine($"lora bench: {m}: {json["error"]}");
            }
            else results.Add(result);
            if (o.Json) stdout.WriteLine(json.ToJsonString());
        }
        if (!o.Json) Table(results, setup, stdout);
        return failed == 0 ? 0 : 1;
    }

    static (JsonObject Json, BenchResult? Result) FromChild(JsonObject j) => (j, j.ContainsKey("error") ? null : FromJson(j));

    static (JsonObject Json, BenchResult? Result) InProcess(string method, BenchSetup setup, Microsoft.FSharp.Collections.FSharpList<string> targets, TextWriter stderr)
    {
        try
        {
            var r = Benchmark.Run(method, BenchMethods.apply(method, setup.Rank, targets), setup);
            return (Json(r), r);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or NotSupportedException or ExternalException)
        {
            if (Environment.GetEnvironmentVariable("LORA_DEBUG") is not null) stderr.WriteLine(e);
            return (ErrorJson(setup.Model, method, Short(e.Message)), null);
        }
        finally
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }

    /// A failed method's line (the reference prints one too).
    internal static JsonObject ErrorJson(string model, string method, string error) =>
        new() { ["impl"] = "lora", ["model"] = model, ["method"] = method, ["error"] = error };

    static string Short(string message)
    {
        var line = message.Split('\n')[0].Trim();
        return line.Length > 300 ? line[..300] : line;
    }

    static double Round(double v, int digits) => double.IsFinite(v) ? Math.Round(v, digits) : -1;

    /// peft_anchor.py's fields (impl, model, mode, batch, img, rank, step_ms, train_img_s, infer_img_s,
    /// peak_mib, trainable, total) plus method, precision, device, infer_merged and peak_source.
    internal static JsonObject Json(BenchResult r) => new()
    {
        ["impl"] = "lora",
        ["model"] = r.Model,
        ["method"] = r.Method,
        ["mode"] = r.Method,
        ["precision"] = r.Precision == CorePrecision.BFloat16 ? "bf16" : "fp32",
        ["device"] = r.Device,
        ["batch"] = r.Batch,
        ["img"] = r.ImageSize,
        ["rank"] = r.Rank,
        ["step_ms"] = Round(r.StepMs, 2),
        ["train_img_s"] = Round(r.TrainImagesPerSecond, 1),
        ["infer_img_s"] = Round(r.InferImagesPerSecond, 1),
        ["infer_merged"] = r.InferMerged,
        ["peak_mib"] = double.IsFinite(r.PeakMiB) ? Math.Round(r.PeakMiB) : -1,
        ["peak_source"] = r.PeakSource,
        ["peak_device_mib"] = double.IsFinite(r.PeakDeviceMiB) ? Math.Round(r.PeakDeviceMiB) : -1,
        ["trainable"] = r.Trainable,
        ["total"] = r.Total,
    };

    /// The inverse of <see cref="Json"/> (a result from a method's own process).
    internal static BenchResult FromJson(JsonObject j)
    {
        double D(string k) => j[k]?.GetValue<double>() is double v && v >= 0 ? v : double.NaN;
        return new BenchResult(
            (string)j["method"]!, (string)j["model"]!, (string)j["device"]!,
            (string)j["precision"]! == "bf16" ? CorePrecision.BFloat16 : CorePrecision.Float32,
            (int)j["batch"]!, (int)j["img"]!, (int)j["rank"]!, D("step_ms"), D("train_img_s"), D("infer_img_s"),
            (bool)j["infer_merged"]!, D("peak_mib"), (string)j["peak_source"]!, (long)j["trainable"]!, (long)j["total"]!)
        { PeakDeviceMiB = D("peak_device_mib") };
    }

    static void Table(IReadOnlyList<BenchResult> results, BenchSetup s, TextWriter stdout)
    {
        string F(double v, string fmt) => double.IsFinite(v) ? v.ToString(fmt, CultureInfo.InvariantCulture) : "-";
        string N(long v) => v.ToString("#,0", CultureInfo.InvariantCulture);
        var header = new[] { "method", "train img/s", "step ms", "infer img/s", "peak MiB", "trainable", "total" };
        var rows = results.Select(r => new[]
        {
            r.Method, F(r.TrainImagesPerSecond, "F1"), F(r.StepMs, "F2"), F(r.InferImagesPerSecond, "F1") + (r.InferMerged ? " (merged)" : ""),
            F(r.PeakMiB, "F0"), N(r.Trainable), N(r.Total),
        }).ToList();
        var title = $"{s.Model}, batch {s.Batch}, {s.ImageSize} px, {s.Classes} classes, rank {s.Rank}, {s.Device}, " +
                    $"{(s.Precision == CorePrecision.BFloat16 ? "bf16" : "fp32")}, median of {s.Steps} steps after {s.Warmup}" +
                    (results.Count > 0 ? $"; peak memory: {results[0].PeakSource}" : "");
        if (ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected)
        {
            var table = new Table().Title(Markup.Escape(title));
            for (int i = 0; i < header.Length; i++)
            {
                var c = new TableColumn(header[i]);
                table.AddColumn(i == 0 ? c : c.RightAligned());
            }
            foreach (var r in rows) table.AddRow(r.Select(Markup.Escape).ToArray());
            AnsiConsole.Write(table);
            return;
        }
        var widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((c, i) => i == 0 ? c.PadRight(widths[i]) : c.PadLeft(widths[i])));
        stdout.WriteLine(title);
        stdout.WriteLine(Line(header));
        foreach (var r in rows) stdout.WriteLine(Line(r));
    }
}
