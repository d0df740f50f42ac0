using System.Globalization;
using System.Text.Json.Nodes;

namespace Lora.Runner;

/// <summary>
/// A recomputed result against the committed one: the values a CPU rerun must reproduce bit for bit
/// (metrics, parameter counts, every curve point, the method's extras), not timings, memory, speed
/// or provenance. Each difference names its value ("metrics.accuracy: committed 0.572, recomputed 0.57").
/// </summary>
public static class ResultComparison
{
    /// Extras that measure the machine, not the result.
    static readonly HashSet<string> MachineExtras = ["images_per_second", "peak_memory_source"];

    public static JsonObject Read(string metricsPath) =>
        JsonNode.Parse(File.ReadAllText(metricsPath)) as JsonObject
        ?? throw new InvalidDataException($"{metricsPath}: not a JSON object");

    public static IReadOnlyList<string> Differences(JsonObject committed, JsonObject recomputed)
    {
        var found = new List<string>();
        void Compare(string path, JsonNode? a, JsonNode? b)
        {
            switch (a, b)
            {
                case (JsonObject oa, JsonObject ob):
                    foreach (var key in oa.Select(kv => kv.Key).Union(ob.Select(kv => kv.Key)).Order(StringComparer.Ordinal))
                        if (!(path == "extra" && MachineExtras.Contains(key))) Compare($"{path}.{key}", oa[key], ob[key]);
                    break;
                case (JsonArray xa, JsonArray xb):
                    if (xa.Count != xb.Count) found.Add($"{path}: committed {xa.Count} points, recomputed {xb.Count}");
                    for (int i = 0; i < Math.Min(xa.Count, xb.Count); i++) Compare($"{path}[{i}]", xa[i], xb[i]);
                    break;
                default:
                    if (!Same(a, b)) found.Add($"{path}: committed {Show(a)}, recomputed {Show(b)}");
                    break;
            }
        }
        foreach (var key in new[] { "metrics", "params", "curve", "extra" }) Compare(key, committed[key], recomputed[key]);
        return found;
    }

    /// Numbers compare as doubles (bit for bit: the JSON holds round-trip text); the rest as JSON text.
    static bool Same(JsonNode? a, JsonNode? b) =>
        a is JsonValue va && b is JsonValue vb && va.TryGetValue<double>(out var x) && vb.TryGetValue<double>(out var y)
            ? BitConverter.DoubleToInt64Bits(x) == BitConverter.DoubleToInt64Bits(y)
            : (a?.ToJsonString() ?? "null") == (b?.ToJsonString() ?? "null");

    static string Show(JsonNode? n) =>
        n is JsonValue v && v.TryGetValue<double>(out var d) ? d.ToString("R", CultureInfo.InvariantCulture) : n?.ToJsonString() ?? "none";
}
