using System.Text.Json.Nodes;

namespace Lora.Core.Tuning;

/// The fields of one adapter_config.json, read by name. A value of the wrong JSON type is an
/// InvalidDataException naming the file and the field, never an exception from System.Text.Json.
public sealed class AdapterConfigReader(JsonObject root, string path)
{
    public string Path => path;

    public JsonNode? this[string key] => root[key];

    static string Kind(JsonNode? n) => n is null ? "null" : n.GetValueKind().ToString().ToLowerInvariant();

    public InvalidDataException Wrong(string field, string expected, JsonNode? n) =>
        new($"'{path}': {field} must be {expected}, got {(n is null ? "null" : n.ToJsonString())} ({Kind(n)})");

    public string? Str(string k) => root[k] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        var n => throw Wrong(k, "a string", n),
    };

    public double? Num(string k) => root[k] is null ? null : AsNumber(root[k]) ?? throw Wrong(k, "a number", root[k]);

    public int? Int(string k, int min) =>
        root[k] is null ? null : AsInt(root[k], min) ?? throw Wrong(k, AsNumber(root[k]) is null ? "a number" : $"an integer from {min} to {1 << 20}", root[k]);

    public bool Bool(string k) => root[k] switch
    {
        null => false,
        JsonValue v when v.TryGetValue<bool>(out var b) => b,
        var n => throw Wrong(k, "true or false", n),
    };

    string ListItem(string field, JsonNode? x) =>
        x is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw Wrong(field, "a list of strings", x);

    /// A list of module names; PEFT's single string is a regex over the full path.
    public List<string> StrList(string k) => root[k] switch
    {
        JsonArray a => a.Select(x => ListItem(k, x)).ToList(),
        JsonValue v when v.TryGetValue<string>(out var s) => new List<string> { "re:" + s },
        null => new List<string>(),
        var n => throw Wrong(k, "a list of strings or a regex string", n),
    };

    public Dictionary<string, T> Pattern<T>(string k, Func<JsonNode?, T?> read) where T : struct => root[k] switch
    {
        null => new Dictionary<string, T>(),
        JsonObject o => o.ToDictionary(kv => kv.Key, kv => read(kv.Value) ?? throw Wrong($"{k}['{kv.Key}']", typeof(T) == typeof(int) ? "an integer" : "a number", kv.Value)),
        var n => throw Wrong(k, "an object", n),
    };

    /// PEFT's `bias`.
    public BiasMode Bias() => Str("bias") switch
    {
        null or "none" => BiasMode.None,
        "lora_only" => BiasMode.LoraOnly,
        "all" => BiasMode.All,
        var b => throw new InvalidDataException($"'{path}': bias '{b}' is not one of none, lora_only, all"),
    };

    public static double? AsNumber(JsonNode? n) => n is JsonValue v && v.TryGetValue<double>(out var d) && double.IsFinite(d) ? d : null;
    public static int? AsInt(JsonNode? n, int min) => AsNumber(n) is double d && d == Math.Floor(d) && d >= min && d <= 1 << 20 ? (int)d : null;
    public static int? AsRank(JsonNode? n) => AsInt(n, 0);
}
