using Lora.Core.IO;
using System.Security.Cryptography;
using System.Text;

namespace Lora.Runner;

/// <summary>
/// Line charts with ScottPlot. A PNG is re-rendered only when its data changed: a sidecar file
/// (&lt;name&gt;.png.sha256) keeps the hash of the plotted data, so regenerating tables from the same results
/// leaves the committed images byte-identical even where font rendering differs between machines.
/// </summary>
public static class Curves
{
    public static string Write(string path, string title, string yLabel, IReadOnlyList<(string Label, List<(double X, double? Y)> Points)> series)
    {
        var data = new StringBuilder().Append(title).Append('\n').Append(yLabel).Append('\n');
        foreach (var (label, points) in series)
        {
            data.Append(label).Append(':');
            foreach (var (x, y) in points) data.Append(FormattableString.Invariant($"{x:R},{y:R};"));
            data.Append('\n');
        }
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(data.ToString()))).ToLowerInvariant();
        var sidecar = path + ".sha256";
        if (File.Exists(path) && File.Exists(sidecar) && File.ReadAllText(sidecar).Trim() == hash) return path;

        var plot = new ScottPlot.Plot();
        foreach (var (label, points) in series)
        {
            var pts = points.Where(p => p.Y is { } y && double.IsFinite(y)).ToList();
            if (pts.Count == 0) continue;
            var line = plot.Add.Scatter(pts.Select(p => p.X).ToArray(), pts.Select(p => p.Y!.Value).ToArray());
            line.LegendText = label;
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
