using Lora.Core.IO;
using System.Security.Cryptography;
using System.Text;

namespace Lora.Runner;

/// <summary>
/// Line charts with ScottPlot. A PNG is re-rendered only when its data changed: a sidecar file
/// (&lt;name&gt;.png.sha256) keeps the hash of the plotted data, so regenerating tables from the same results
/// leaves the committed images byte-identical even where font rendering differs between machines.
/// One line per variant (the run name without its seed): the mean over its seeds, with a shaded
/// ± std band when there are several; one colour per method, one line style per rank or variant.
/// </summary>
public static class Curves
{
    /// <summary>A plotted line: its label, the method that picks its colour, its style index within the method, its points.</summary>
    public sealed record Series(string Label, string Method, int Style, IReadOnlyList<(double X, double Mean, double Std)> Points);

    static readonly ScottPlot.LinePattern[] Patterns =
        [ScottPlot.LinePattern.Solid, ScottPlot.LinePattern.Dashed, ScottPlot.LinePattern.Dotted, ScottPlot.LinePattern.DenselyDashed];

    /// <summary>The loss and validation-metric charts of one experiment's runs; returns both paths.</summary>
    public static IEnumerable<string> WriteExperiment(string lossPath, string metricPath, string experiment, string metricName, IReadOnlyList<RunRecord> runs)
    {
        // AdaLoRA optimises its task loss plus an orthogonal regulariser: the chart compares task losses
        var loss = SeriesOf(runs, p => p.TaskLoss ?? p.TrainLoss, LossPoints);
        var metric = SeriesOf(runs, p => p.ValMetric, r => r.Curve);
        yield return Write(lossPath, $"{experiment}: training loss", "train loss (task loss)", loss);
        yield return Write(metricPath, $"{experiment}: validation {metricName}", metricName, metric);
    }

    /// <summary>One series per variant, in table order; a point is the mean (and std) over the seeds that have it.</summary>
    /// The training-loss points of a run: its every-N-steps points and step 0 when it has them (newer
    /// records), else its epoch ends (an epoch's mean would zig-zag against the windows' means).
    public static IEnumerable<CurvePoint> LossPoints(RunRecord r)
    {
        static bool Window(CurvePoint p) => p.Step > 0 && p.ValLoss is null && p.ValMetric is null;
        return r.Curve.Any(Window) ? r.Curve.Where(p => p.Step == 0 || Window(p)) : r.Curve;
    }

    public static IReadOnlyList<Series> SeriesOf(IReadOnlyList<RunRecord> runs, Func<CurvePoint, double?> y, Func<RunRecord, IEnumerable<CurvePoint>> points)
    {
        var variants = runs.Where(r => r.Curve.Count > 0)
            .GroupBy(TableAxes.Variant, StringComparer.Ordinal)
            .OrderBy(g => TableAxes.MethodIndex(g.First().Labels.Method)).ThenBy(g => g.First().Labels.Method, StringComparer.Ordinal)
            .ThenBy(g => g.First().Labels.Rank).ThenBy(g => g.Key, StringComparer.Ordinal)
            .ToList();
        var style = new Dictionary<string, int>(StringComparer.Ordinal);
        var list = new List<Series>();
        foreach (var v in variants)
        {
            var method = v.First().Labels.Method;
            var k = style.GetValueOrDefault(method);
            style[method] = k + 1;
            var series = v.SelectMany(r => points(r).Select(p => (X: (double)p.Step, Y: y(p))))
                .Where(p => p.Y is { } value && double.IsFinite(value))
                .GroupBy(p => p.X).OrderBy(g => g.Key)
                .Select(g => CellStats.Of(g.Select(p => p.Y!.Value).ToList()) is { } s ? (g.Key, s.Mean, s.Std) : (g.Key, double.NaN, 0))
                .ToList();
            var seeds = v.Select(r => r.Labels.Seed).Distinct().Count();
            list.Add(new Series(seeds > 1 ? $"{v.Key} (n={seeds})" : v.Key, method, k, series));
        }
        return list;
    }

    public static string Write(string path, string title, string yLabel, IReadOnlyList<Series> series)
    {
        var data = new StringBuilder().Append(title).Append('\n').Append(yLabel).Append('\n');
        foreach (var s in series)
        {
            data.Append(s.Label).Append('|').Append(s.Method).Append('|').Append(s.Style).Append(':');
            foreach (var (x, m, sd) in s.Points) data.Append(FormattableString.Invariant($"{x:R},{m:R},{sd:R};"));
            data.Append('\n');
        }
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(data.ToString()))).ToLowerInvariant();
        var sidecar = path + ".sha256";
        if (File.Exists(path) && File.Exists(sidecar) && File.ReadAllText(sidecar).Trim() == hash) return path;

        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var methods = series.Select(s => s.Method).Distinct().ToList();
        foreach (var s in series)
        {
            var pts = s.Points.Where(p => double.IsFinite(p.Mean)).ToList();
            if (pts.Count == 0) continue;
            var colour = palette.GetColor(TableAxes.MethodIndex(s.Method) is var i && i < 6 ? i : 6 + methods.IndexOf(s.Method));
            var xs = pts.Select(p => p.X).ToArray();
            if (pts.Any(p => p.Std > 0))
            {
                var band = plot.Add.FillY(xs, pts.Select(p => p.Mean - p.Std).ToArray(), pts.Select(p => p.Mean + p.Std).ToArray());
                band.FillStyle.Color = colour.WithAlpha(0.2);
                band.LineStyle.Width = 0;
            }
            var line = plot.Add.Scatter(xs, pts.Select(p => p.Mean).ToArray());
            line.Color = colour;
            line.LinePattern = Patterns[s.Style % Patterns.Length];
            line.MarkerSize = pts.Count > 20 ? 0 : 4;
            line.LegendText = s.Label;
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Edge.Right);
        var bytes = plot.GetImage(900, 500).GetImageBytes(ScottPlot.ImageFormat.Png, 100);
        AtomicFile.WriteAllBytes(path, bytes);
        AtomicFile.WriteAllText(sidecar, hash + "\n");
        return path;
    }
}
