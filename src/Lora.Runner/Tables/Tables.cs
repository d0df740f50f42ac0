using Lora.Core.IO;
using System.Text;
using Lora.Dsl;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Lora.Runner;

/// <summary>
/// Markdown tables and PNG curves regenerated from whatever results exist. Same results, same bytes:
/// rows are sorted, numbers use the invariant culture, files are only rewritten when their bytes change.
/// Missing values show as —. An experiment's tables are its declared ones (Lora.Dsl's TableDecl, from
/// the spec) or else the default layout of its task, which is itself a declaration.
/// </summary>
public static class Tables
{
    public const string Missing = TableAxes.Missing;

    static TableAxis Axis(string axis, string? header = null) => new(axis, header is null ? null : FSharpOption<string>.Some(header));
    static TableCell Cell(string metric, string header) => new(metric, CellAggregate.MeanStd, null, FSharpOption<string>.Some(header));
    static TableDecl Decl(string name, IEnumerable<TableAxis> rows, IEnumerable<TableCell> cells, IEnumerable<string> order) =>
        new(name, null, ListModule.OfSeq(rows), FSharpList<TableAxis>.Empty, ListModule.OfSeq(cells),
            FSharpList<Tuple<string, FSharpList<string>>>.Empty, ListModule.OfSeq(order), null);

    /// The default table of an experiment: the Medical-SAM-Adapter layout for segmentation
    /// (Baseline | Backbone | mode | DICE | mIoU | Memory), else method | rank | trainable | accuracy |
    /// time | memory, with model and dataset columns when the experiment has several.
    public static TableDecl DefaultTable(IReadOnlyList<RunRecord> runs)
    {
        if (runs.All(r => r.Labels.Task == "segmentation"))
            return Decl("main", [Axis("model", "Baseline"), Axis("backbone", "Backbone"), Axis("mode")],
                [Cell("dice", "DICE"), Cell("miou", "mIoU"), Cell("memory", "Memory")], ["model", "mode"]);
        var rows = new List<TableAxis> { Axis("method"), Axis("rank") };
        if (runs.Select(r => r.Labels.Model).Distinct().Count() > 1) rows.Add(Axis("model"));
        if (runs.Select(r => r.Labels.Dataset).Distinct().Count() > 1) rows.Add(Axis("dataset"));
        return Decl("main", rows,
            [Cell("trainable", "trainable params"), Cell("accuracy", "accuracy"), Cell("train_seconds", "train time"), Cell("memory", "peak memory")],
            rows.Select(a => a.Axis));
    }

    /// The tfimm parameter summary: total / trainable / non-trainable per model × method × rank.
    public static TableDecl ParameterTable() =>
        Decl("parameters", [Axis("model"), Axis("method"), Axis("rank")],
            [Cell("total", "total"), Cell("trainable", "trainable"), Cell("frozen", "non-trainable")], ["model", "method", "rank"]);

    /// <summary>Writes every table and curve under <paramref name="outDir"/>; returns the files written or checked.
    /// <paramref name="declared"/>: the tables an experiment declares, by its file-safe name (`SafeName.ForFile`, as its
    /// table file is named; others get the default).</summary>
    public static IReadOnlyList<string> Generate(ResultsStore store, string outDir, IReadOnlyDictionary<string, IReadOnlyList<TableDecl>>? declared = null)
    {
        var records = store.LoadAll();
        var files = new List<string>();
        Directory.CreateDirectory(outDir);
        string Out(string name) => SafePath.Inside(outDir, Path.Combine(outDir, name));
        var tunes = records.Where(r => r.Labels.Kind == "tuning").ToList();
        // the experiment's name is also one file name, since tables and curves are named after it
        foreach (var group in tunes.GroupBy(r => SafeName.ForFile(r.Labels.Experiment)).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var exp = group.Key;
            var runs = group.ToList();
            var isSeg = runs.All(r => r.Labels.Task == "segmentation");
            var sb = new StringBuilder();
            sb.Append("# ").Append(exp).Append("\n\n");
            var tables = declared is not null && declared.TryGetValue(exp, out var d) && d.Count > 0
                ? d : [DefaultTable(runs)];
            for (var i = 0; i < tables.Count; i++)
            {
                var t = tables[i];
                if (i > 0) sb.Append('\n');
                if (tables.Count > 1) sb.Append("## ").Append(SafeName.Printable(t.Name)).Append("\n\n");
                if (FSharpOption<string>.get_IsSome(t.Caption)) sb.Append(SafeName.Printable(t.Caption.Value)).Append("\n\n");
                sb.Append(TableLayout.Render(t, runs));
            }
            if (runs.Any(r => r.Curve.Count > 0))
            {
                var metricName = isSeg ? "DICE" : "accuracy";
                files.AddRange(Curves.WriteExperiment(Out(Path.Combine("curves", exp + "-loss.png")), Out(Path.Combine("curves", exp + "-metric.png")), exp, metricName, runs));
                sb.Append($"\n![loss per mode](curves/{exp}-loss.png)\n\n![{metricName} per mode](curves/{exp}-metric.png)\n");
            }
            files.Add(WriteIfChanged(Out(exp + ".md"), sb.ToString()));
        }

        var accuracy = AccuracyGrid(tunes.Where(r => r.Labels.Task == "classification").ToList());
        if (accuracy.Length > 0) files.Add(WriteIfChanged(Out("accuracy.md"), accuracy));
        if (tunes.Count > 0)
            files.Add(WriteIfChanged(Out("parameters.md"), "# Parameters per model and method\n\n" + TableLayout.Render(ParameterTable(), tunes)));
        return files;
    }

    /// <summary>The ModelScope table: accuracy per dataset (rows) × backbone (columns), mean over seeds, with an Average row;
    /// one per experiment and mode, for experiments with more than one dataset or backbone.</summary>
    public static string AccuracyGrid(IReadOnlyList<RunRecord> rows)
    {
        var sb = new StringBuilder();
        foreach (var exp in rows.GroupBy(r => SafeName.ForFile(r.Labels.Experiment)).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var models = exp.Select(r => TableAxes.Value("model", r)).Distinct().OrderBy(x => x, StringComparer.Ordinal).ToList();
            var datasets = exp.Select(r => TableAxes.Value("dataset", r)).Distinct().OrderBy(x => x, StringComparer.Ordinal).ToList();
            if (models.Count < 2 && datasets.Count < 2) continue;
            foreach (var mode in exp.GroupBy(r => (r.Labels.Method, r.Labels.Rank)).OrderBy(g => TableAxes.MethodIndex(g.Key.Method)).ThenBy(g => g.Key.Rank))
            {
                if (sb.Length == 0) sb.Append("# Accuracy per dataset and backbone\n");
                sb.Append($"\n## {exp.Key}: {SafeName.Printable(mode.Key.Method)}{(mode.Key.Rank > 0 ? $" r{mode.Key.Rank}" : "")}\n\n");
                var decl = new TableDecl("accuracy", null, ListModule.OfSeq([Axis("dataset")]), ListModule.OfSeq([Axis("model")]),
                    ListModule.OfSeq([new TableCell("accuracy", CellAggregate.MeanStd, null, null)]),
                    FSharpList<Tuple<string, FSharpList<string>>>.Empty, FSharpList<string>.Empty, null);
                sb.Append(TableLayout.Render(decl, mode.ToList()));
            }
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
