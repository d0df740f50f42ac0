using System.Globalization;
using System.Text.Json.Nodes;
using Lora.Core.IO;

namespace Lora.Runner;

/// <summary>
/// What a table reads from a run record by name: the value of an axis (method, mode, rank, model,
/// backbone, dataset, variant, seed, config.&lt;path&gt;) and of a metric (accuracy, dice, trainable,
/// memory, ...), the same words as Lora.Dsl's TableVocabulary.
/// </summary>
public static class TableAxes
{
    public const string Missing = "—";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    static readonly string[] MethodOrder = ["full", "head", "lora", "dora", "adalora", "adapter", "bitfit", "ln_tuning", "ia3", "ssf", "loha", "lokr", "vera", "adaptformer", "vpt", "vpt_deep", "convpass", "fact", "fact_tk", "oft", "boft", "hra"];

    public static int MethodIndex(string m) { var i = Array.IndexOf(MethodOrder, m); return i < 0 ? MethodOrder.Length : i; }

    public static string DisplayMethod(string m) => m switch
    {
        "lora" => "LoRA", "dora" => "DoRA", "adalora" => "AdaLoRA", "adapter" => "Adapter", "bitfit" => "BitFit", "ln_tuning" => "LN tuning", "ia3" => "(IA)³", "ssf" => "SSF", "loha" => "LoHa", "lokr" => "LoKr", "vera" => "VeRA", "adaptformer" => "AdaptFormer", "vpt" => "VPT-shallow", "vpt_deep" => "VPT-deep", "convpass" => "Convpass", "fact" => "FacT-TT", "fact_tk" => "FacT-TK", "oft" => "OFT", "boft" => "BOFT", "hra" => "HRA", "full" => "Full", "head" => "Head", _ => m,
    };

    // Every name read back is printable (a results folder may come from anyone's clone).
    static string P(string s) => SafeName.Printable(s);

    /// The run name without its seed suffix ("lora-r4-s1" → "lora-r4"): the runs one row averages over.
    public static string Variant(RunRecord r)
    {
        var suffix = $"-s{r.Labels.Seed.ToString(Inv)}";
        var n = r.Labels.Name;
        return P(n.EndsWith(suffix, StringComparison.Ordinal) ? n[..^suffix.Length] : n);
    }

    /// The spec's backbone option, else the zoo entry's card (SAM's encoder, UNet), else the zoo name.
    public static string Backbone(RunRecord r)
    {
        var opts = r.Config?["model"]?["options"] as JsonObject;
        return Str(opts?["backbone"]) ?? Str(opts?["encoder"]) ?? CardBackbone(r.Labels.Zoo) ?? P(r.Labels.Zoo);
    }

    static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var s) ? P(s) : null;

    static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string?> backbones = new();

    /// The backbone label of a zoo entry's card (built on the meta device: no memory), or null.
    static string? CardBackbone(string zoo) => backbones.GetOrAdd(zoo, name =>
    {
        if (!Lora.Core.Models.Zoo.Names.Contains(name)) return null;
        using var m = Lora.Core.Models.Zoo.Create(name, device: TorchSharp.torch.META);
        return Lora.Core.Models.Zoo.Card(m).Backbone;
    });

    /// The value of an axis as a table shows it.
    public static string Value(string axis, RunRecord r)
    {
        var l = r.Labels;
        return axis switch
        {
            "method" => P(l.Method),
            "mode" => P(DisplayMethod(l.Method)) + (l.Rank > 0 ? $" r{l.Rank.ToString(Inv)}" : ""),
            "rank" => l.Rank > 0 ? l.Rank.ToString(Inv) : Missing,
            "model" => P(l.Model),
            "zoo" => P(l.Zoo),
            "backbone" => Backbone(r),
            "dataset" => P(l.Dataset),
            "task" => P(l.Task),
            "variant" => Variant(r),
            "name" => P(l.Name),
            "seed" => l.Seed.ToString(Inv),
            _ when axis.StartsWith("config.", StringComparison.Ordinal) => ConfigValue(r, axis["config.".Length..]),
            _ => throw new ArgumentException($"unknown table axis '{axis}'"),
        };
    }

    static string ConfigValue(RunRecord r, string path)
    {
        JsonNode? n = r.Config;
        foreach (var part in path.Split('.')) n = n is JsonObject o ? o[part] : null;
        return n switch
        {
            null => Missing,
            JsonValue v when v.TryGetValue<string>(out var s) => P(s),
            _ => P(n.ToJsonString()),
        };
    }

    /// Orders two records on one axis: methods in the paper's order, ranks and seeds as numbers,
    /// config values as numbers when both are, everything else ordinally.
    public static int Compare(string axis, RunRecord a, RunRecord b)
    {
        switch (axis)
        {
            case "method":
                return Chain(MethodIndex(a.Labels.Method).CompareTo(MethodIndex(b.Labels.Method)), string.CompareOrdinal(a.Labels.Method, b.Labels.Method));
            case "mode":
                return Chain(Compare("method", a, b), a.Labels.Rank.CompareTo(b.Labels.Rank));
            case "rank": return a.Labels.Rank.CompareTo(b.Labels.Rank);
            case "seed": return a.Labels.Seed.CompareTo(b.Labels.Seed);
        }
        var (x, y) = (Value(axis, a), Value(axis, b));
        if (axis.StartsWith("config.", StringComparison.Ordinal)
            && double.TryParse(x, NumberStyles.Float, Inv, out var dx) && double.TryParse(y, NumberStyles.Float, Inv, out var dy))
            return dx.CompareTo(dy);
        return string.CompareOrdinal(x, y);
    }

    static int Chain(int first, int then) => first != 0 ? first : then;

    /// The value of a metric of a record, or null when it has none.
    public static double? Metric(string metric, RunRecord r) => metric switch
    {
        "trainable" => r.Params.Trainable,
        "total" => r.Params.Total,
        "frozen" => r.Params.Total - r.Params.Trainable,
        "trainable_percent" => r.Params.Total > 0 ? (double)r.Params.Trainable / r.Params.Total : null,
        "train_seconds" => r.Timings.TrainSeconds,
        "memory" => r.PeakMemoryBytes,
        _ => r.Metrics.TryGetValue(metric, out var v) && double.IsFinite(v) ? v : null,
    };

    /// The metric's own format and which way is better (TableVocabulary.metrics).
    public static (string Format, Lora.Dsl.TableVocabulary.Better Better) MetricInfo(string metric)
    {
        var found = Lora.Dsl.TableVocabulary.metrics.FirstOrDefault(m => m.Item1 == metric);
        return found is null ? ("fraction", Lora.Dsl.TableVocabulary.Better.Neither) : (found.Item2.Item1, found.Item2.Item2);
    }
}
