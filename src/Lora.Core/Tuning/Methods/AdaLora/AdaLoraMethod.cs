using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaLoRA on Linear and Conv2d layers, as PEFT's AdaLoraModel (Conv2d since PEFT 0.20): SVD-form
/// adapters whose ranks a <see cref="RankAllocator"/> (the step hook) prunes to one global budget
/// over every tuned layer, whatever its kind.
public sealed class AdaLoraMethod : TuningMethod
{
    public static readonly AdaLoraMethod Instance = new();

    AdaLoraMethod() { }

    public override string Name => "AdaLoRA";
    public override string PeftType => "ADALORA";
    public override string? OnePerModel => "a model can carry only one AdaLoRA adapter (its rank allocator works on one budget), as in PEFT";

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        base.MatchTargets(model, modules, config, matches, errors);
        LoraMethod.CheckPatterns((LoraConfig)config, matches, errors);
    }

    protected override string? CheckTarget(string path, nn.Module m, TuningConfig config) => m switch
    {
        Linear l => LoraMethod.LinearRankCheck(path, l, ((AdaLoraConfig)config).InitRank),
        Conv2d c when c.transposed => $"'{path}' is a transposed convolution, which AdaLoRA does not support",
        Conv2d c when c.groups != 1 => $"'{path}' is a grouped convolution (groups={c.groups}), which AdaLoRA does not support (PEFT's SVDConv2d reshapes ΔW to the kernel, which fails for groups > 1)",
        Conv2d c when c.padding_mode != PaddingModes.Zeros => $"'{path}' pads with {c.padding_mode}: AdaLoRA supports zero-padded convolutions only (as PEFT's F.conv2d)",
        Conv2d c when LycorisLayer.ExplicitPadding(c) is null => $"'{path}' pads 'same' unevenly (an even dilated kernel), which AdaLoRA does not support",
        Conv2d c => ConvRankCheck(path, c, ((AdaLoraConfig)config).InitRank),
        _ => $"'{path}' is a {m.GetType().Name}, which AdaLoRA cannot tune (supported: Linear and Conv2d); narrow the pattern",
    };

    /// As for a Linear: an init_r above min(in_channels·kh·kw, out_channels) adds nothing but parameters.
    static string? ConvRankCheck(string path, Conv2d c, int r)
    {
        var max = Math.Min(c.in_channels * c.kernel_size[0] * c.kernel_size[1], c.out_channels);
        return r > max ? $"rank {r} for '{path}' exceeds min(in_channels·kh·kw, out_channels) = {max} of this Conv2d" : null;
    }

    protected override TunerLayer CreateLayer(nn.Module module, string path) => module switch
    {
        Linear l => new AdaLoraLinear(l),
        Conv2d c => new AdaLoraConv2d(c),
        _ => base.CreateLayer(module, path),
    };

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path)
    {
        var c = (AdaLoraConfig)config;
        ((AdaLoraLayer)layer).AddAdapter(adapter, c.InitRank, c.AlphaFor(path), c.Dropout);
    }

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report) =>
        new AdaLoraAttachment(new RankAllocator(Layers(model, adapter), adapter, (AdaLoraConfig)config));

    static List<(string Path, AdaLoraLayer Layer)> Layers(TunedModel model, string adapter) =>
        model.Layers.Where(l => l.Layer is AdaLoraLayer a && a.AdapterNames.Contains(adapter)).Select(l => (l.Path, (AdaLoraLayer)l.Layer)).ToList();

    /// The allocator while training; a loaded rank pattern replaces it (a loaded adapter is for use,
    /// not for further allocation).
    sealed class AdaLoraAttachment(RankAllocator allocator) : AttachedAdapter
    {
        /// PEFT's AdaLoraConfig needs total_step &gt; 0 with tinit &lt; total_step - tfinal: a TotalStep
        /// left to the training loop is saved as the loop set it, or (never trained) as the shortest
        /// schedule PEFT accepts.
        public override TuningConfig ConfigToSave(TuningConfig config) =>
            config is AdaLoraConfig { TotalStep: <= 0 } c
                ? c with { TotalStep = this.allocator?.TotalStep is long t && t > 0 ? t : c.TInit + c.TFinal + 1 }
                : config;

        RankAllocator? allocator = allocator;
        IReadOnlyDictionary<string, bool[]>? loaded;

        public override IStepHook? StepHook => allocator;
        public override IReadOnlyDictionary<string, bool[]>? RankPattern => allocator?.RankPattern ?? loaded;

        /// Shrinks the layers to the kept ranks (ranknum keeps the initial rank, so outputs are
        /// those of the masked full-rank adapter), as PEFT's resize_modules_by_rank_pattern.
        public override void LoadRankPattern(TunedModel model, string adapter, IReadOnlyDictionary<string, bool[]> pattern)
        {
            var layers = Layers(model, adapter);
            foreach (var key in pattern.Keys)
                if (!layers.Any(l => l.Path == key)) throw new InvalidDataException($"rank_pattern names '{key}', which is not an AdaLoRA layer of this model");
            foreach (var (path, a) in layers)
            {
                if (!pattern.TryGetValue(path, out var keep)) continue;
                if (keep.Length != a.A(adapter).shape[0])
                    throw new InvalidDataException($"rank_pattern for '{path}' has {keep.Length} entries but init_r is {a.A(adapter).shape[0]}");
                a.Resize(adapter, keep.Count(k => k));
            }
            loaded = pattern;
            allocator = null;
        }
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json)
    {
        var config = new AdaLoraConfig
        {
            Targets = json.StrList("target_modules"),
            Bias = json.Bias(),
            ModulesToSave = json.StrList("modules_to_save"),
            Rank = json.Int("r", 1) ?? 8,
            Alpha = json.Num("lora_alpha") ?? 8,
            Dropout = json.Num("lora_dropout") ?? 0,
            UseRsLora = json.Bool("use_rslora"),
            InitGaussian = LoraMethod.InitGaussian(json),
            AlphaPattern = json.Pattern("alpha_pattern", AdapterConfigReader.AsNumber),
            InitRank = json.Int("init_r", 1) ?? 12,
            TargetRank = json.Int("target_r", 1) ?? 8,
            Beta1 = json.Num("beta1") ?? 0.85,
            Beta2 = json.Num("beta2") ?? 0.85,
            TInit = json.Int("tinit", 0) ?? 0,
            TFinal = json.Int("tfinal", 0) ?? 0,
            DeltaT = json.Int("deltaT", 1) ?? 1,
            OrthRegWeight = json.Num("orth_reg_weight") ?? 0.5,
            TotalStep = json.Int("total_step", 0) ?? 0,
        };
        Dictionary<string, bool[]>? pattern = null;
        // PEFT's AdaLoRA rank_pattern: "<layer>.lora_E.<adapter>" → kept ranks
        if (json["rank_pattern"] is JsonObject arp && arp.Count > 0)
        {
            pattern = new Dictionary<string, bool[]>();
            foreach (var (k, v) in arp)
            {
                var i = k.IndexOf(".lora_E", StringComparison.Ordinal);
                pattern[i < 0 ? k : k[..i]] = v is JsonArray a
                    ? a.Select(x => x is JsonValue b && b.TryGetValue<bool>(out var keep) ? keep : throw json.Wrong($"rank_pattern['{k}']", "a list of booleans", v)).ToArray()
                    : throw json.Wrong($"rank_pattern['{k}']", "a list of booleans", v);
            }
        }
        return (config, pattern);
    }

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (AdaLoraConfig)config;
        var o = LoraMethod.Instance.LoraFields(c, Header());
        o["init_r"] = c.InitRank; o["target_r"] = c.TargetRank; o["beta1"] = c.Beta1; o["beta2"] = c.Beta2;
        o["tinit"] = c.TInit; o["tfinal"] = c.TFinal; o["deltaT"] = c.DeltaT; o["orth_reg_weight"] = c.OrthRegWeight;
        o["total_step"] = c.TotalStep == 0 ? null : c.TotalStep;
        o["rank_pattern"] = rankPattern is null ? null : new JsonObject(rankPattern.Select(kv => KeyValuePair.Create($"{kv.Key}.lora_E.{adapter}",
            (JsonNode?)new JsonArray(kv.Value.Select(b => (JsonNode?)JsonValue.Create(b)).ToArray()))));
        return o;
    }
}
