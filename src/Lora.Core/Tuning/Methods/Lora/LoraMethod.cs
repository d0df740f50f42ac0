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
        if (c.FusedQkv.Count > 0 && m is not Linear) return $"'{path}' is a {m.GetType().Name}: q/v-only LoRA (fused_qkv) applies to a fused qkv Linear only; narrow the pattern";
        if (c.Init is LoraInit.Pissa or LoraInit.Olora && m is not Linear) return $"'{path}' is a {m.GetType().Name}: {c.InitName} initialisation applies to Linear layers only (as PEFT's); narrow the pattern or use the default init";
        switch (m)
        {
            case Linear l when c.FusedQkv.Count > 0:
                if (l.out_features % FusedQkv.PartNames.Count != 0) return $"'{path}' has out_features = {l.out_features}, not divisible into q, k, v thirds: fused_qkv needs a fused qkv Linear";
                var third = l.out_features / FusedQkv.PartNames.Count;
                return r > Math.Min(l.in_features, third) ? $"rank {r} for '{path}' exceeds min(in_features, out_features/3) = {Math.Min(l.in_features, third)} of a fused qkv Linear({l.in_features}, {l.out_features})" : null;
            case Linear l:
                return LinearRankCheck(path, l, r);
            case ConvTranspose2d ct:
                if (c.Variant != LoraVariant.Plain) return $"'{path}' is a ConvTranspose2d: {c.MethodName} is not defined on transposed convolutions (plain LoRA is)";
                if (ct.groups != 1) return $"'{path}' is a grouped ConvTranspose2d (groups = {ct.groups}), which LoRA does not support";
                var w = ct.weight!;
                var maxt = Math.Min(w.shape[0] * w.shape[2] * w.shape[3], w.shape[1]);
                return r > maxt ? $"rank {r} for '{path}' exceeds min(in_channels·kh·kw, out_channels) = {maxt} of the ConvTranspose2d" : null;
            case Conv2d conv:
                var maxc = Math.Min(conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] / conv.groups, conv.out_channels);
                if (conv.transposed) return $"'{path}' is a transposed convolution, which LoRA does not support";
                if (r % conv.groups != 0) return $"rank {r} for '{path}' must be a multiple of the Conv2d's groups ({conv.groups})";
                return r > Math.Max(maxc, conv.groups) ? $"rank {r} for '{path}' exceeds min(in_channels·kh·kw/groups, out_channels) = {maxc}" : null;
            default:
                return $"'{path}' is a {m.GetType().Name}, which {c.MethodName} cannot tune (supported: Linear, Conv2d and ConvTranspose2d); narrow the pattern";
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
        ConvTranspose2d t => new LoraConvTranspose2d(t),
        _ => base.CreateLayer(module, path),
    };

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path)
    {
        var c = (LoraConfig)config;
        var o = new LoraOptions(c.RankFor(path), c.AlphaFor(path), c.Dropout, c.UseRsLora, c.InitGaussian)
        {
            Variant = c.Variant, Init = c.Init, PissaNiter = c.PissaNiter, LoraPlusLrRatio = c.LoraPlusLrRatio,
            FusedParts = c.FusedQkv.Count > 0 ? FusedQkv.Parts(c.FusedQkv) : null,
        };
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
            Init = InitOf(json).Init,
            PissaNiter = InitOf(json).Niter,
            FusedQkv = json.StrList("fused_qkv"),
        }, null);

    internal static bool InitGaussian(AdapterConfigReader json) =>
        json["init_lora_weights"] is JsonValue init && init.TryGetValue<string>(out var how) && how == "gaussian";

    /// init_lora_weights "pissa", "pissa_niter_K", "olora" (true, false and "gaussian" are Kaiming here:
    /// the saved tensors replace the factors anyway, only a residualising init changes the base).
    internal static (LoraInit Init, int? Niter) InitOf(AdapterConfigReader json)
    {
        if (json["init_lora_weights"] is not JsonValue v || !v.TryGetValue<string>(out var how)) return (LoraInit.Kaiming, null);
        if (how == "pissa") return (LoraInit.Pissa, null);
        if (how == "olora") return (LoraInit.Olora, null);
        if (how.StartsWith("pissa_niter_", StringComparison.Ordinal))
            return int.TryParse(how["pissa_niter_".Length..], out var k) ? (LoraInit.Pissa, k) : throw new InvalidDataException($"init_lora_weights '{how}': pissa_niter_K needs a whole number K");
        if (how == "gaussian") return (LoraInit.Kaiming, null);
        throw new InvalidDataException($"init_lora_weights '{how}' is not supported (true, false, gaussian, pissa, pissa_niter_K, olora are)");
    }

    /// The peft_type of a q/v-only (fused qkv) adapter: this project's own, as PEFT cannot load it
    /// (its lora_B holds k·out/3 rows, PEFT's lora.Linear expects out).
    public const string FusedPeftType = "LORA_FUSED_QKV";

    public override bool Reads(string peftType) => peftType == PeftType || peftType == FusedPeftType;

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
        o["init_lora_weights"] = c.InitName is { } init ? JsonValue.Create(init) : JsonValue.Create(true);
        if (c.FusedQkv.Count > 0)
        {
            o["peft_type"] = FusedPeftType;
            o["fused_qkv"] = ListJson(c.FusedQkv);
        }
        o["alpha_pattern"] = new JsonObject(c.AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        return o;
    }
}
