using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoRA (and its variants, DoRA) on Linear and Conv2d layers, as PEFT's LoraModel.
public sealed class LoraMethod : TuningMethod
{
    public static readonly LoraMethod Instance = new();

    LoraMethod() { }

    public override string Name => "LoRA";
    public override string PeftType => "LORA";

    /// The targets, and every rank/alpha pattern must name one of them.
    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        base.MatchTargets(model, modules, config, matches, errors);
        CheckPatterns((LoraConfig)config, matches, errors);
    }

    internal static void CheckPatterns(LoraConfig c, List<ModuleMatch> matches, List<string> errors)
    {
        foreach (var p in c.RankPattern.Keys.Concat(c.AlphaPattern.Keys))
            if (!matches.Any(m => m.Role == "target" && ModulePattern.Matches(p, m.Path)))
                errors.Add($"rank/alpha pattern '{p}' matches no target module");
    }

    public override string NameOf(TuningConfig config) => ((LoraConfig)config).MethodName;

    protected override string? CheckTarget(string path, nn.Module m, TuningConfig config)
    {
        var c = (LoraConfig)config;
        var r = c.RankFor(path);
        switch (m)
        {
            case Linear l:
                return LinearRankCheck(path, l, r);
            case Conv2d conv:
                var maxc = Math.Min(conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] / conv.groups, conv.out_channels);
                if (conv.transposed) return $"'{path}' is a transposed convolution, which LoRA does not support";
                if (r % conv.groups != 0) return $"rank {r} for '{path}' must be a multiple of the Conv2d's groups ({conv.groups})";
                return r > Math.Max(maxc, conv.groups) ? $"rank {r} for '{path}' exceeds min(in_channels·kh·kw/groups, out_channels) = {maxc}" : null;
            default:
                return $"'{path}' is a {m.GetType().Name}, which {c.MethodName} cannot tune (supported: Linear and Conv2d); narrow the pattern";
        }
    }

    /// A rank above min(in, out) of a Linear adds nothing but parameters (LoRA and AdaLoRA).
    internal static string? LinearRankCheck(string path, Linear l, int r)
    {
        var max = Math.Min(l.in_features, l.out_features);
        return r > max ? $"rank {r} for '{path}' exceeds min(in_features, out_features) = {max} of Linear({l.in_features}, {l.out_features})" : null;
    }

    protected override TunerLayer CreateLayer(nn.Module module, string path) => module switch
    {
        Linear l => new LoraLinear(l),
        Conv2d c => new LoraConv2d(c),
        _ => base.CreateLayer(module, path),
    };

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path)
    {
        var c = (LoraConfig)config;
        var o = new LoraOptions(c.RankFor(path), c.AlphaFor(path), c.Dropout, c.UseRsLora, c.InitGaussian) { Variant = c.Variant };
        ((ILoraLayer)layer).AddAdapter(adapter, o);
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new LoraConfig
        {
            Targets = json.StrList("target_modules"),
            Bias = json.Bias(),
            ModulesToSave = json.StrList("modules_to_save"),
            Rank = json.Int("r", 1) ?? 8,
            Alpha = json.Num("lora_alpha") ?? 8,
            Dropout = json.Num("lora_dropout") ?? 0,
            UseRsLora = json.Bool("use_rslora"),
            // PEFT writes true/false or the name of an initialisation
            InitGaussian = InitGaussian(json),
            AlphaPattern = json.Pattern("alpha_pattern", AdapterConfigReader.AsNumber),
            RankPattern = json.Pattern("rank_pattern", AdapterConfigReader.AsRank),
            UseDora = json.Bool("use_dora"),
        }, null);

    internal static bool InitGaussian(AdapterConfigReader json) =>
        json["init_lora_weights"] is JsonValue init && init.TryGetValue<string>(out var how) && how == "gaussian";

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (LoraConfig)config;
        var o = LoraFields(c);
        o["rank_pattern"] = new JsonObject(c.RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        return o;
    }

    /// The LoraConfig fields (AdaLoRA writes them too, as its config extends LoRA's).
    internal JsonObject LoraFields(LoraConfig c, JsonObject? header = null)
    {
        var o = header ?? Header();
        o["r"] = c.Rank;
        o["lora_alpha"] = c.Alpha;
        o["lora_dropout"] = c.Dropout;
        o["target_modules"] = TargetsJson(c.Targets);
        o["bias"] = BiasJson(c.Bias);
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["fan_in_fan_out"] = false;
        o["use_rslora"] = c.UseRsLora;
        o["use_dora"] = c.UseDora;
        o["init_lora_weights"] = c.InitGaussian ? JsonValue.Create("gaussian") : JsonValue.Create(true);
        o["alpha_pattern"] = new JsonObject(c.AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        return o;
    }
}
