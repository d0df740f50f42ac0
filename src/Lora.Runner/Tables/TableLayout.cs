using System.Globalization;
using System.Text;
using Lora.Dsl;
using Microsoft.FSharp.Core;

namespace Lora.Runner;

/// <summary>Mean, sample standard deviation and count of one cell's values (one per run, usually per seed).</summary>
public sealed record CellStats(double Mean, double Std, int N, double Max)
{
    public static CellStats? Of(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) return null;
        var mean = xs.Average();
        var std = xs.Count > 1 ? Math.Sqrt(xs.Sum(x => (x - mean) * (x - mean)) / (xs.Count - 1)) : 0;
        return new CellStats(mean, std, xs.Count, xs.Max());
    }
}

/// <summary>
/// Renders one declared table (Lora.Dsl's TableDecl) over run records as markdown: rows and columns
/// are the distinct values of their axes, a cell aggregates the runs that share them (mean ± std over
/// seeds, n when more than one), the best mean of a column is bold when seeds were averaged, and a
/// baseline adds a column of per-seed paired differences. Same records, same bytes.
/// </summary>
public static class TableLayout
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    const string Missing = TableAxes.Missing;

    static string? Opt(FSharpOption<string>? o) => FSharpOption<string>.get_IsSome(o) ? o!.Value : null;

    static string Header(TableAxis a) => Opt(a.Header) ?? a.Axis;

    /// The header of a cell; a CPU peak measured above the process baseline says so.
    static string Header(TableCell c, IReadOnlyList<RunRecord> runs)
    {
        var h = Opt(c.Header) ?? c.Metric;
        if (c.Metric == "memory" && runs.Any(r => r.PeakMemorySource == MemorySources.AboveBaseline))
            h += " (CPU: peak RSS above baseline)";
        return h;
    }

    static string FormatOf(TableCell c) => Opt(c.Format) ?? TableAxes.MetricInfo(c.Metric).Format;

    /// One number in a format: percent (0..1 shown as %), fraction, count, seconds, memory (bytes → MiB) or a .NET format.
    public static string Number(string format, double v) => format switch
    {
        "percent" => (v * 100).ToString("F2", Inv),
        "fraction" => v.ToString("F4", Inv),
        "count" => Math.Round(v).ToString("N0", Inv),
        "seconds" => v.ToString("F1", Inv),
        "memory" => (v / (1024.0 * 1024.0)).ToString("F1", Inv),
        _ => v.ToString(format, Inv),
    };

    static string Unit(string format) => format switch { "percent" => "%", "seconds" => " s", "memory" => " MiB", _ => "" };

    /// A cell: "57.20%" for one run, "57.20 ± 1.03% (n=3)" for several; counts that agree show once.
    public static string Cell(string format, CellAggregate aggregate, CellStats? s)
    {
        if (s is null) return Missing;
        var unit = Unit(format);
        if (aggregate.IsMax) return Number(format, s.Max) + unit;
        if (s.N == 1 || aggregate.IsMean || (format == "count" && s.Std == 0)) return Number(format, s.Mean) + unit;
        return $"{Number(format, s.Mean)} ± {Number(format, s.Std)}{unit} (n={s.N.ToString(Inv)})";
    }

    /// A paired difference: "+2.50 ± 1.10 pp (n=3)" (percentage points for a percent metric).
    public static string Delta(string format, CellStats? s)
    {
        if (s is null) return Missing;
        string Signed(double v) => (v >= 0 ? "+" : "−") + Number(format, Math.Abs(v));
        var unit = format == "percent" ? " pp" : Unit(format);
        return s.N == 1 ? Signed(s.Mean) + unit : $"{Signed(s.Mean)} ± {Number(format, s.Std)}{unit} (n={s.N.ToString(Inv)})";
    }

    static double? Aggregated(CellAggregate a, CellStats? s) => s is null ? null : a.IsMax ? s.Max : s.Mean;

    /// The runs a table keeps: its filters, on the axes' displayed values.
    public static IReadOnlyList<RunRecord> Filter(TableDecl t, IEnumerable<RunRecord> runs) =>
        runs.Where(r => t.Filters.All(f => f.Item2.Contains(TableAxes.Value(f.Item1, r)))).ToList();

    sealed class Group(string[] key, List<RunRecord> runs)
    {
        public string[] Key { get; } = key;
        public List<RunRecord> Runs { get; } = runs;
    }

    static List<Group> GroupBy(IEnumerable<RunRecord> runs, IReadOnlyList<string> axes) =>
        runs.GroupBy(r => string.Join('\u0001', axes.Select(a => TableAxes.Value(a, r))), StringComparer.Ordinal)
            .Select(g => new Group(axes.Select(a => TableAxes.Value(a, g.First())).ToArray(), g.OrderBy(r => r.Hash, StringComparer.Ordinal).ToList()))
            .ToList();

    static List<Group> Sorted(List<Group> groups, IReadOnlyList<string> order) =>
        groups.OrderBy(g => g, Comparer<Group>.Create((a, b) =>
        {
            foreach (var axis in order)
            {
                var c = TableAxes.Compare(axis, a.Runs[0], b.Runs[0]);
                if (c != 0) return c;
            }
            for (var i = 0; i < a.Key.Length; i++)
            {
                var c = string.CompareOrdinal(a.Key[i], b.Key[i]);
                if (c != 0) return c;
            }
            return 0;
        })).ToList();

    static CellStats? Stats(string metric, IEnumerable<RunRecord> runs) =>
        CellStats.Of(runs.Select(r => TableAxes.Metric(metric, r)).Where(v => v is not null).Select(v => v!.Value).ToList());

    /// The markdown of one table (header, separator, rows), without a title.
    public static string Render(TableDecl t, IReadOnlyList<RunRecord> all)
    {
        var runs = Filter(t, all);
        var rowAxes = t.Rows.Select(a => a.Axis).ToList();
        var order = t.Order.IsEmpty ? rowAxes : t.Order.ToList();
        var rows = Sorted(GroupBy(runs, rowAxes), order);
        // bold marks a best mean only where seeds were averaged: one seed's differences are within noise
        var averaged = rows.Any(g => g.Runs.Select(r => r.Labels.Seed).Distinct().Count() > 1);
        return t.Columns.IsEmpty ? ByCells(t, runs, rows, averaged) : ByColumns(t, runs, rows, averaged);
    }

    static string Line(IEnumerable<string> cells) => "| " + string.Join(" | ", cells) + " |\n";

    /// Text axes align left; numeric axes (rank, seed) and every value column align right.
    static string Separator(IEnumerable<TableAxis> axes, int right) =>
        "|" + string.Concat(axes.Select(a => a.Axis is "rank" or "seed" ? " ---: |" : " --- |")) + string.Concat(Enumerable.Repeat(" ---: |", right)) + "\n";

    /// Bold the best value(s) of a column, when the metric has a better direction and two or more rows have one.
    static string[] MarkBest(TableCell c, IReadOnlyList<double?> values, string[] cells, bool averaged)
    {
        var better = TableAxes.MetricInfo(c.Metric).Better;
        var present = values.Where(v => v is not null).Select(v => v!.Value).ToList();
        if (!averaged || better.IsNeither || present.Count < 2 || present.Distinct().Count() < 2) return cells;
        var best = better.IsHigher ? present.Max() : present.Min();
        return cells.Select((s, i) => values[i] == best ? $"**{s}**" : s).ToArray();
    }

    static string ByCells(TableDecl t, IReadOnlyList<RunRecord> runs, List<Group> rows, bool averaged)
    {
        var cells = t.Cells.ToList();
        var baseline = Opt(t.Baseline);
        var deltaCell = baseline is null ? null : cells.FirstOrDefault(c => !TableAxes.MetricInfo(c.Metric).Better.IsNeither);
        var headers = t.Rows.Select(Header).Concat(cells.Select(c => Header(c, runs))).ToList();
        if (deltaCell is not null) headers.Add($"Δ {Header(deltaCell, runs)} vs {baseline}");
        var columns = cells.Select(c =>
        {
            var stats = rows.Select(g => Stats(c.Metric, g.Runs)).ToList();
            var text = stats.Select(s => Cell(FormatOf(c), c.Aggregate, s)).ToArray();
            return MarkBest(c, stats.Select(s => Aggregated(c.Aggregate, s)).ToList(), text, averaged);
        }).ToList();
        if (deltaCell is not null)
            columns.Add(rows.Select(g => Delta(FormatOf(deltaCell), PairedDifference(deltaCell.Metric, g.Runs, runs, baseline!))).ToArray());
        var sb = new StringBuilder();
        sb.Append(Line(headers)).Append(Separator(t.Rows, headers.Count - t.Rows.Length));
        for (var i = 0; i < rows.Count; i++)
            sb.Append(Line(rows[i].Key.Concat(columns.Select(col => col[i]))));
        return sb.ToString();
    }

    static string ByColumns(TableDecl t, IReadOnlyList<RunRecord> runs, List<Group> rows, bool averaged)
    {
        var c = t.Cells.Head;
        var colAxes = t.Columns.Select(a => a.Axis).ToList();
        var cols = Sorted(GroupBy(runs, colAxes), colAxes);
        var colKeys = cols.Select(g => string.Join('\u0001', g.Key)).ToList();
        var headers = t.Rows.Select(Header).Concat(cols.Select(g => string.Join(" / ", g.Key))).ToList();
        var sb = new StringBuilder();
        sb.Append(Line(headers)).Append(Separator(t.Rows, cols.Count));
        var stats = rows.Select(g =>
        {
            var byCol = g.Runs.GroupBy(r => string.Join('\u0001', colAxes.Select(a => TableAxes.Value(a, r))), StringComparer.Ordinal)
                .ToDictionary(x => x.Key, x => Stats(c.Metric, x), StringComparer.Ordinal);
            return colKeys.Select(k => byCol.GetValueOrDefault(k)).ToList();
        }).ToList();
        var format = FormatOf(c);
        var text = rows.Select(_ => new string[cols.Count]).ToList();
        for (var j = 0; j < cols.Count; j++)
        {
            var column = stats.Select(s => s[j]).ToList();
            var marked = MarkBest(c, column.Select(s => Aggregated(c.Aggregate, s)).ToList(), column.Select(s => Cell(format, c.Aggregate, s)).ToArray(), averaged);
            for (var i = 0; i < rows.Count; i++) text[i][j] = marked[i];
        }
        for (var i = 0; i < rows.Count; i++) sb.Append(Line(rows[i].Key.Concat(text[i])));
        {
            // the ModelScope Average row: the mean of a column's cells, when every row has one
            var avg = Enumerable.Range(0, cols.Count).Select(j =>
            {
                var xs = stats.Select(s => Aggregated(c.Aggregate, s[j])).ToList();
                return xs.All(x => x is not null) ? Number(format, xs.Average(x => x!.Value)) + Unit(format) : Missing;
            });
            sb.Append(Line(new[] { "Average" }.Concat(Enumerable.Repeat("", t.Rows.Length - 1)).Concat(avg)));
        }
        return sb.ToString();
    }

    /// The differences metric(run) − metric(baseline run) over the runs of a row, paired by seed: the
    /// baseline run has the same experiment, model, dataset and seed, and the baseline's method (or
    /// variant name); of several, the one with the same rank. A baseline row has no difference.
    public static CellStats? PairedDifference(string metric, IReadOnlyList<RunRecord> row, IReadOnlyList<RunRecord> all, string baseline)
    {
        bool IsBaseline(RunRecord r) => r.Labels.Method == baseline || TableAxes.Variant(r) == baseline;
        var diffs = new List<double>();
        foreach (var r in row)
        {
            if (IsBaseline(r) || TableAxes.Metric(metric, r) is not { } x) continue;
            var candidates = all.Where(b => IsBaseline(b) && b.Labels.Experiment == r.Labels.Experiment && b.Labels.Model == r.Labels.Model
                                            && b.Labels.Dataset == r.Labels.Dataset && b.Labels.Seed == r.Labels.Seed).ToList();
            var sameRank = candidates.Where(b => b.Labels.Rank == r.Labels.Rank).ToList();
            var pick = sameRank.Count == 1 ? sameRank[0] : candidates.Count == 1 ? candidates[0] : null;
            if (pick is not null && TableAxes.Metric(metric, pick) is { } y) diffs.Add(x - y);
        }
        return CellStats.Of(diffs);
    }
}

/// <summary>What a record's CPU peak memory measures (its extra's peak_memory_source).</summary>
public static class MemorySources
{
    /// The peak RSS of the whole process (results written before the baseline was taken).
    public const string Process = "VmHWM";
    /// The peak RSS above the process's RSS just before the model was built.
    public const string AboveBaseline = "VmHWM-above-baseline";
}
