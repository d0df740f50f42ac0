using Lora.Core.IO;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Lora.Runner;

/// <summary>
/// Markdown tables and PNG curves regenerated from whatever results exist. Same results, same bytes:
/// rows are sorted, numbers use the invariant culture, files are only rewritten when their bytes change.
/// Missing values show as —.
/// </summary>
public static class Tables
{
    public const string Missing = "—";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    static readonly string[] MethodOrder = ["full", "head", "lora", "dora", "adalora", "adapter", "bitfit", "ln_tuning", "ia3", "ssf", "loha", "lokr", "vera", "adaptformer", "vpt", "vpt_deep"];

    /// <summary>A result as the tables see it.</summary>
    public sealed record Row(
        string Hash, string Kind, string Experiment, string Name, string Method, int Rank, string Model, string Zoo,
        string Dataset, string Task, int Seed, double? Accuracy, double? Dice, double? MIoU, long? Total, long? Trainable,
        double? TrainSeconds, long? PeakMemory, IReadOnlyList<(double X, double Loss, double? Metric)> Curve, string? Backbone);

    // Every name read back is printable (a results folder may come from anyone's clone); the
    // experiment's is also one file name, since tables and curves are named after it.
    static string? Raw(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    static string? Str(JsonNode? n) => Raw(n) is { } s ? SafeName.Printable(s) : null;
    static double? Num(JsonNode? n) => n is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;
    static long? Long(JsonNode? n) => Num(n) is { } d ? (long)d : null;

    public static Row ToRow(JsonObject o)
    {
        var l = o["labels"] as JsonObject ?? new JsonObject();
        var m = o["metrics"] as JsonObject ?? new JsonObject();
        var curve = (o["curve"] as JsonArray ?? [])
            .OfType<JsonObject>()
            .Select(p => (X: Num(p["step"]) is { } s && s > 0 ? s : Num(p["epoch"]) ?? 0, Loss: Num(p["train_loss"]) ?? double.NaN, Metric: Num(p["val_metric"])))
            .ToList();
        var opts = o["config"]?["model"]?["options"] as JsonObject;
        var backbone = Str(opts?["backbone"]) ?? Str(opts?["encoder"]);
        return new Row(
            Str(o["hash"]) ?? "", Str(l["kind"]) ?? "tuning", SafeName.ForFile(Raw(l["experiment"]) ?? ""), Str(l["name"]) ?? "",
            Str(l["method"]) ?? "", (int)(Num(l["rank"]) ?? 0), Str(l["model"]) ?? "", Str(l["zoo"]) ?? "",
            Str(l["dataset"]) ?? "", Str(l["task"]) ?? "classification", (int)(Num(l["seed"]) ?? 0),
            Num(m["accuracy"]), Num(m["dice"]), Num(m["miou"]), Long(o["params"]?["total"]), Long(o["params"]?["trainable"]),
            Num(o["timings"]?["train_seconds"]), Long(o["peak_memory_bytes"]), curve, backbone);
    }

    static int MethodIndex(string m) { var i = Array.IndexOf(MethodOrder, m); return i < 0 ? MethodOrder.Length : i; }

    static IOrderedEnumerable<Row> Ordered(IEnumerable<Row> rows) =>
        rows.OrderBy(r => MethodIndex(r.Method)).ThenBy(r => r.Rank).ThenBy(r => r.Name, StringComparer.Ordinal).ThenBy(r => r.Hash, StringComparer.Ordinal);

    public static string Count(long? n) => n is { } v ? v.ToString("N0", Inv) : Missing;
    public static string Percent(double? x) => x is { } v && double.IsFinite(v) ? (v * 100).ToString("F2", Inv) + "%" : Missing;
    public static string Fraction(double? x) => x is { } v && double.IsFinite(v) ? v.ToString("F4", Inv) : Missing;
    public static string Seconds(double? x) => x is { } v && double.IsFinite(v) ? v.ToString("F1", Inv) + " s" : Missing;
    public static string Memory(long? b) => b is { } v ? (v / (1024.0 * 1024.0)).ToString("F1", Inv) + " MiB" : Missing;
    static string RankText(Row r) => r.Rank > 0 ? r.Rank.ToString(Inv) : Missing;

    static string DisplayMethod(string m) => m switch
    {
        "lora" => "LoRA", "dora" => "DoRA", "adalora" => "AdaLoRA", "adapter" => "Adapter", "bitfit" => "BitFit", "ln_tuning" => "LN tuning", "ia3" => "(IA)³", "ssf" => "SSF", "loha" => "LoHa", "lokr" => "LoKr", "vera" => "VeRA", "adaptformer" => "AdaptFormer", "vpt" => "VPT-shallow", "vpt_deep" => "VPT-deep", "full" => "Full", "head" => "Head", _ => m,
    };

    /// The spec's backbone option, else the zoo entry's card (SAM's encoder, UNet), else the zoo name.
    static string BackboneOf(Row r) => r.Backbone ?? CardBackbone(r.Zoo) ?? r.Zoo;

    static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string?> backbones = new();

    /// The backbone label of a zoo entry's card (built on the meta device: no memory), or null.
    static string? CardBackbone(string zoo) => backbones.GetOrAdd(zoo, name =>
    {
        if (!Lora.Core.Models.Zoo.Names.Contains(name)) return null;
        using var m = Lora.Core.Models.Zoo.Create(name, device: TorchSharp.torch.META);
        return Lora.Core.Models.Zoo.Card(m).Backbone;
    });

    /// <summary>Writes every table and curve under <paramref name="outDir"/>; returns the files written or checked.</summary>
    public static IReadOnlyList<string> Generate(ResultsStore store, string outDir)
    {
        var rows = store.LoadAll().Select(ToRow).ToList();
        var files = new List<string>();
        Directory.CreateDirectory(outDir);
        string Out(string name) => SafePath.Inside(outDir, Path.Combine(outDir, name));
        var tunes = rows.Where(r => r.Kind == "tuning").ToList();
        foreach (var group in tunes.GroupBy(r => r.Experiment).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var exp = group.Key;
            var isSeg = group.All(r => r.Task == "segmentation");
            var sb = new StringBuilder();
            sb.Append("# ").Append(exp).Append("\n\n");
            if (isSeg)
            {
                sb.Append("| Baseline | Backbone | mode | DICE | mIoU | Memory |\n| --- | --- | --- | ---: | ---: | ---: |\n");
                foreach (var r in Ordered(group).OrderBy(r => r.Model, StringComparer.Ordinal).ThenBy(r => MethodIndex(r.Method)).ThenBy(r => r.Rank))
                    sb.Append($"| {r.Model} | {BackboneOf(r)} | {DisplayMethod(r.Method)}{(r.Rank > 0 ? $" r{r.Rank}" : "")} | {Fraction(r.Dice)} | {Fraction(r.MIoU)} | {Memory(r.PeakMemory)} |\n");
            }
            else
            {
                sb.Append("| method | rank | trainable params | accuracy | train time | peak memory |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
                foreach (var r in Ordered(group))
                    sb.Append($"| {r.Method} | {RankText(r)} | {Count(r.Trainable)} | {Percent(r.Accuracy)} | {Seconds(r.TrainSeconds)} | {Memory(r.PeakMemory)} |\n");
            }
            var curves = Ordered(group).Where(r => r.Curve.Count > 0).ToList();
            if (curves.Count > 0)
            {
                var metricName = isSeg ? "DICE" : "accuracy";
                files.Add(Curves.Write(Out(Path.Combine("curves", exp + "-loss.png")), $"{exp}: training loss", "train loss",
                    curves.Select(r => (Label(r), r.Curve.Select(p => (p.X, (double?)p.Loss)).ToList())).ToList()));
                files.Add(Curves.Write(Out(Path.Combine("curves", exp + "-metric.png")), $"{exp}: validation {metricName}", metricName,
                    curves.Select(r => (Label(r), r.Curve.Select(p => (p.X, p.Metric)).ToList())).ToList()));
                sb.Append($"\n![loss per mode](curves/{exp}-loss.png)\n\n![{metricName} per mode](curves/{exp}-metric.png)\n");
            }
            files.Add(WriteIfChanged(Out(exp + ".md"), sb.ToString()));
        }

        var accuracy = AccuracyGrid(tunes.Where(r => r.Task == "classification").ToList());
        if (accuracy.Length > 0) files.Add(WriteIfChanged(Out("accuracy.md"), accuracy));
        if (tunes.Count > 0) files.Add(WriteIfChanged(Out("parameters.md"), Parameters(tunes)));
        return files;
    }

    static string Label(Row r) => r.Name;

    /// <summary>The ModelScope table: accuracy per dataset (rows) × backbone (columns), mean over seeds, with an Average row;
    /// one per experiment and mode, for experiments with more than one dataset or backbone.</summary>
    public static string AccuracyGrid(IReadOnlyList<Row> rows)
    {
        var sb = new StringBuilder();
        foreach (var exp in rows.GroupBy(r => r.Experiment).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var models = exp.Select(r => r.Model).Distinct().OrderBy(x => x, StringComparer.Ordinal).ToList();
            var datasets = exp.Select(r => r.Dataset).Distinct().OrderBy(x => x, StringComparer.Ordinal).ToList();
            if (models.Count < 2 && datasets.Count < 2) continue;
            foreach (var mode in exp.GroupBy(r => (r.Method, r.Rank)).OrderBy(g => MethodIndex(g.Key.Method)).ThenBy(g => g.Key.Rank))
            {
                if (sb.Length == 0) sb.Append("# Accuracy per dataset and backbone\n");
                sb.Append($"\n## {exp.Key}: {mode.Key.Method}{(mode.Key.Rank > 0 ? $" r{mode.Key.Rank}" : "")}\n\n");
                sb.Append("| dataset | ").Append(string.Join(" | ", models)).Append(" |\n");
                sb.Append("| --- |").Append(string.Concat(models.Select(_ => " ---: |"))).Append('\n');
                double? Cell(string d, string m)
                {
                    var xs = mode.Where(r => r.Dataset == d && r.Model == m && r.Accuracy is not null).Select(r => r.Accuracy!.Value).ToList();
                    return xs.Count > 0 ? xs.Average() : null;
                }
                foreach (var d in datasets)
                    sb.Append($"| {d} | ").Append(string.Join(" | ", models.Select(m => Percent(Cell(d, m))))).Append(" |\n");
                sb.Append("| Average | ").Append(string.Join(" | ", models.Select(m =>
                {
                    var cells = datasets.Select(d => Cell(d, m)).ToList();
                    return cells.All(c => c is not null) ? Percent(cells.Average(c => c!.Value)) : Missing;
                }))).Append(" |\n");
            }
        }
        return sb.ToString();
    }

    /// <summary>The tfimm parameter summary: total / trainable / non-trainable per model × method.</summary>
    public static string Parameters(IReadOnlyList<Row> rows)
    {
        var sb = new StringBuilder("# Parameters per model and method\n\n| model | method | rank | total | trainable | non-trainable |\n| --- | --- | ---: | ---: | ---: | ---: |\n");
        var distinct = rows.GroupBy(r => (r.Model, r.Method, r.Rank))
            .Select(g => g.OrderBy(r => r.Hash, StringComparer.Ordinal).First())
            .OrderBy(r => r.Model, StringComparer.Ordinal).ThenBy(r => MethodIndex(r.Method)).ThenBy(r => r.Rank);
        foreach (var r in distinct)
        {
            long? frozen = r.Total is { } t && r.Trainable is { } tr ? t - tr : null;
            sb.Append($"| {r.Model} | {r.Method} | {RankText(r)} | {Count(r.Total)} | {Count(r.Trainable)} | {Count(frozen)} |\n");
        }
        return sb.ToString();
    }

    /// <summary>Writes the file atomically unless it already holds exactly these bytes.</summary>
    public static string WriteIfChanged(string path, string text)
    {
        var bytes = new UTF8Encoding(false).GetBytes(text);
        if (!File.Exists(path) || !File.ReadAllBytes(path).AsSpan().SequenceEqual(bytes))
            AtomicFile.WriteAllBytes(path, bytes);
        return path;
    }
}
