using System.Globalization;
using System.Text.Json;

namespace Lora.Core.Models;

/// timm constructor arguments by name (img_size, embed_dim, depths, ...), as read from a JSON object.
/// Keys a model does not use (such as "timm", the version that wrote a fixture) are ignored.
public sealed class ModelArgs
{
    private readonly Dictionary<string, object> values;
    // the keys a model asked for (shared by copies): what it takes, so a key it never read is one it does not know
    private readonly HashSet<string> asked;

    private ModelArgs(Dictionary<string, object> values, HashSet<string>? asked = null)
    {
        this.values = values;
        this.asked = asked ?? new HashSet<string>();
    }

    /// The keys asked for (with or without a value here) since these arguments were made: after a
    /// model is built from them, its options (`validate` reports a given key outside them).
    public IReadOnlyCollection<string> Asked => asked;

    private string Ask(string key) { lock (asked) asked.Add(key); return key; }

    public static ModelArgs Empty { get; } = new(new Dictionary<string, object>());

    public IEnumerable<string> Keys => values.Keys;

    public bool Has(string key) => values.ContainsKey(Ask(key));

    /// A copy with one argument set (numbers, bools, strings, or arrays of numbers).
    public ModelArgs With(string key, object value) => new(new Dictionary<string, object>(values) { [key] = value }, asked);

    /// A copy with every argument of <paramref name="over"/> set over these.
    public ModelArgs With(ModelArgs over)
    {
        var d = new Dictionary<string, object>(values);
        foreach (var kv in over.values) d[kv.Key] = kv.Value;
        return new(d, asked);
    }

    public static ModelArgs FromDictionary(IReadOnlyDictionary<string, object> values) => new(values.ToDictionary(kv => kv.Key, kv => kv.Value));

    /// Parses a JSON object such as {"img_size": 32, "depths": [1, 1, 2, 1]}.
    public static ModelArgs FromJson(string json, string source = "model config")
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON ({e.Message})."); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{source}: expected a JSON object of timm constructor arguments, got {doc.RootElement.ValueKind}.");
            var d = new Dictionary<string, object>();
            foreach (var p in doc.RootElement.EnumerateObject()) d[p.Name] = Convert(p.Value);
            return new ModelArgs(d);
        }
    }

    /// The arguments as a JSON object that <see cref="FromJson"/> reads back (a run's model card keeps them).
    public string ToJson() => JsonSerializer.Serialize(values.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToDictionary(kv => kv.Key, kv => kv.Value));

    public static ModelArgs FromFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config file '{path}' does not exist.", path);
        return FromJson(Lora.Core.IO.InputFile.ReadAllText(path, Lora.Core.IO.InputFile.MaxTextBytes, "model config"), path);
    }

    private static object Convert(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.String => e.GetString() ?? "",
        JsonValueKind.Array => e.EnumerateArray().Select(Convert).ToArray(),
        _ => e.GetRawText(),
    };

    public long Long(string key, long fallback)
    {
        if (!values.TryGetValue(Ask(key), out var v)) return fallback;
        var d = ToDouble(key, v, "an integer");
        if (d != Math.Floor(d)) throw Bad(key, v, "an integer");
        return (long)d;
    }

    public double Double(string key, double fallback) =>
        values.TryGetValue(Ask(key), out var v) ? ToDouble(key, v, "a number") : fallback;

    public bool Bool(string key, bool fallback) => !values.TryGetValue(Ask(key), out var v) ? fallback : v switch
    {
        bool b => b,
        _ => throw Bad(key, v, "true or false"),
    };

    public string String(string key, string fallback) => !values.TryGetValue(Ask(key), out var v) ? fallback : v switch
    {
        string s => s,
        _ => throw Bad(key, v, "a string"),
    };

    public long[] Longs(string key, long[] fallback)
    {
        if (!values.TryGetValue(Ask(key), out var v)) return fallback;
        return v switch
        {
            object[] xs => xs.Select(x => { var d = ToDouble(key, x, "a list of integers"); return (long)d; }).ToArray(),
            long[] ls => ls,
            int[] ints => ints.Select(i => (long)i).ToArray(),
            _ => throw Bad(key, v, "a list of integers"),
        };
    }

    private static double ToDouble(string key, object v, string expected) => v switch
    {
        double d => d,
        float f => f,
        int i => i,
        long l => l,
        _ => throw Bad(key, v, expected),
    };

    private static ArgumentException Bad(string key, object v, string expected) =>
        new($"Model argument '{key}' must be {expected}, got {Show(v)}.");

    private static string Show(object v) => v switch
    {
        object[] xs => "[" + string.Join(", ", xs.Select(Show)) + "]",
        string s => $"\"{s}\"",
        double d => d.ToString(CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "null",
    };
}
