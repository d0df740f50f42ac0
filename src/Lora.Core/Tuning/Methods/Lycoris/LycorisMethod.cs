using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// What the LoHa and LoKr tuners share: Linear and (non-transposed, zero-padded) Conv2d targets,
/// rank and alpha patterns that must name a target, and the LyCORIS config fields.
public abstract class LycorisMethod : TuningMethod
{
    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        MatchPatterns(model, modules, config, matches, errors);
        var c = (LycorisConfig)config;
        foreach (var p in c.RankPattern.Keys.Concat(c.AlphaPattern.Keys))
            if (!matches.Any(m => m.Role == "target" && ModulePattern.Matches(p, m.Path)))
                errors.Add($"rank/alpha pattern '{p}' matches no target module");
    }

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) => module switch
    {
        Linear => null,
        Conv2d c when c.transposed => $"'{path}' is a transposed convolution, which {Name} does not support",
        Conv2d c when c.padding_mode != PaddingModes.Zeros => $"'{path}' pads with {c.padding_mode}: {Name} supports zero-padded convolutions only (as PEFT's F.conv2d)",
        Conv2d c when LycorisLayer.ExplicitPadding(c) is null => $"'{path}' pads 'same' unevenly (an even dilated kernel), which {Name} does not support",
        Conv2d => null,
        _ => $"'{path}' is a {module.GetType().Name}, which {Name} cannot tune (supported: Linear and Conv2d); narrow the pattern",
    };

    protected abstract LycorisLayer NewLayer(nn.Module<Tensor, Tensor> module);

    protected override TunerLayer CreateLayer(nn.Module module, string path) => NewLayer((nn.Module<Tensor, Tensor>)module);

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path)
    {
        var c = (LycorisConfig)config;
        ((LycorisLayer)layer).AddAdapter(adapter, c.RankFor(path), c.AlphaFor(path), c);
    }

    /// The fields both configs read; dropouts other than 0 are refused (not implemented).
    protected static T ReadCommon<T>(AdapterConfigReader json, T c) where T : LycorisConfig
    {
        foreach (var k in new[] { "rank_dropout", "module_dropout" })
            if (json.Num(k) is double d && d != 0) throw new InvalidDataException($"'{json.Path}': {k} = {d} is not supported; save the adapter with 0");
        return c with
        {
            Targets = json.StrList("target_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            Rank = json.Int("r", 1) ?? 8,
            Alpha = json.Num("alpha") ?? 8,
            UseEffectiveConv2d = json.Bool("use_effective_conv2d"),
            InitWeights = json["init_weights"] is null || json["init_weights"] is JsonValue v && v.TryGetValue<string>(out _) || json.Bool("init_weights"),
            RankPattern = json.Pattern("rank_pattern", AdapterConfigReader.AsRank),
            AlphaPattern = json.Pattern("alpha_pattern", AdapterConfigReader.AsNumber),
        };
    }

    protected JsonObject WriteCommon(LycorisConfig c)
    {
        var o = Header();
        o["r"] = c.Rank;
        o["alpha"] = c.Alpha;
        o["rank_dropout"] = 0.0;
        o["module_dropout"] = 0.0;
        o["target_modules"] = TargetsJson(c.Targets);
        o["exclude_modules"] = null;
        o["init_weights"] = c.InitWeights;
        o["layers_to_transform"] = null;
        o["layers_pattern"] = null;
        o["rank_pattern"] = new JsonObject(c.RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        o["alpha_pattern"] = new JsonObject(c.AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["use_effective_conv2d"] = c.UseEffectiveConv2d;
        return o;
    }
}
