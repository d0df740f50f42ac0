using System.Text.Json;
using System.Text.Json.Nodes;
using Lora.Core.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// Adapter checkpoints in PEFT's layout: a folder with `adapter_config.json` (PEFT's field names)
/// and `adapter_model.safetensors` holding only the tuning parameters and fully trained modules,
/// keyed as PEFT's save_pretrained keys them: `base_model.model.&lt;path&gt;.lora_A.weight` (the adapter
/// name removed), `…lora_magnitude_vector` (DoRA), `…lora_A`/`lora_E`/`lora_B` (AdaLoRA, sliced to
/// the kept ranks of rank_pattern), `base_model.model.head.weight` (modules to save, wrapped or
/// trained in place alike). Bias modes
/// save `…base_layer.bias` keys. Bottleneck adapters (not a PEFT method) are saved with
/// peft_type "BOTTLENECK_ADAPTER" and keys `base_model.model.&lt;block&gt;.adapter_attn.fc1.weight`.
public static class AdapterCheckpoint
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    const string Prefix = "base_model.model.";

    /// Writes the adapter's config and weights into <paramref name="folder"/> (created if needed).
    public static void Save(TunedModel model, string folder, string adapter = "default")
    {
        if (!model.Configs.TryGetValue(adapter, out var config)) throw new ArgumentException($"the model has no adapter named '{adapter}'");
        Directory.CreateDirectory(folder);
        var (tensors, pattern) = Collect(model, adapter, forSave: true);
        // PEFT's AdaLoraConfig needs total_step > 0 with tinit < total_step - tfinal: a TotalStep
        // left to the training loop is saved as the loop set it, or (never trained) as the
        // shortest schedule PEFT accepts.
        if (config.Method == TuningMethod.AdaLora && config.TotalStep <= 0)
            config = config with { TotalStep = model.Allocator(adapter)?.TotalStep is long t && t > 0 ? t : config.TInit + config.TFinal + 1 };
        // PEFT's modules_to_save are names matched as suffixes: a regular expression is written
        // as the module paths it matched
        if (config.ModulesToSave.Any(ModulePattern.IsRegex))
            config = config with { ModulesToSave = PeftModuleNames(model, config.ModulesToSave) };
        var json = ConfigJson(config, pattern, adapter).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        Safetensors.Save(Path.Combine(folder, WeightsFile), tensors.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.contiguous())),
            new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(folder, ConfigFile), json);
    }

    /// The tensors a save would write (PEFT keys → tensors), for inspection and tests.
    public static Dictionary<string, Tensor> StateDict(TunedModel model, string adapter = "default") => Collect(model, adapter, forSave: true).Tensors;

    /// Reads a PEFT (or this library's) adapter_config.json into a configuration, plus AdaLoRA's
    /// rank pattern (layer path → kept ranks) when present.
    public static (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(string folder)
    {
        var path = Path.Combine(folder, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"no {ConfigFile} in '{folder}': is this a PEFT adapter folder?", path);
        JsonObject root;
        try
        {
            // duplicate keys are refused while parsing (JsonObject would otherwise throw lazily, at any depth)
            root = JsonNode.Parse(InputFile.ReadAllText(path, InputFile.MaxTextBytes, "adapter config"), documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false }) as JsonObject
                ?? throw new InvalidDataException($"'{path}' must hold one JSON object ({{\"peft_type\": ..., \"r\": ...}})");
        }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}"); }
        catch (ArgumentException e) { throw new InvalidDataException($"'{path}' is not a valid adapter config: {e.Message}"); }
        // Every field is read through one of these: a value of the wrong JSON type is an error that
        // names the field, never an exception from System.Text.Json.
        string Kind(JsonNode? n) => n is null ? "null" : n.GetValueKind().ToString().ToLowerInvariant();
        InvalidDataException Wrong(string field, string expected, JsonNode? n) =>
            new($"'{path}': {field} must be {expected}, got {(n is null ? "null" : n.ToJsonString())} ({Kind(n)})");
        string? Str(string k) => root[k] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            var n => throw Wrong(k, "a string", n),
        };
        double? Num(string k) => root[k] is null ? null : AsNumber(root[k]) ?? throw Wrong(k, "a number", root[k]);
        int? Int(string k, int min) =>
            root[k] is null ? null : AsInt(root[k], min) ?? throw Wrong(k, AsNumber(root[k]) is null ? "a number" : $"an integer from {min} to {1 << 20}", root[k]);
        bool Bool(string k) => root[k] switch
        {
            null => false,
            JsonValue v when v.TryGetValue<bool>(out var b) => b,
            var n => throw Wrong(k, "true or false", n),
        };
        string Item(string field, JsonNode? x) =>
            x is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw Wrong(field, "a list of strings", x);
        List<string> StrList(string k) => root[k] switch
        {
            JsonArray a => a.Select(x => Item(k, x)).ToList(),
            JsonValue v when v.TryGetValue<string>(out var s) => new List<string> { "re:" + s }, // PEFT: a string is a regex over the full path
            null => new List<string>(),
            var n => throw Wrong(k, "a list of strings or a regex string", n),
        };
        Dictionary<string, T> Pattern<T>(string k, Func<JsonNode?, T?> read) where T : struct => root[k] switch
        {
            null => new Dictionary<string, T>(),
            JsonObject o => o.ToDictionary(kv => kv.Key, kv => read(kv.Value) ?? throw Wrong($"{k}['{kv.Key}']", typeof(T) == typeof(int) ? "an integer" : "a number", kv.Value)),
            var n => throw Wrong(k, "an object", n),
        };
        static double? AsNumber(JsonNode? n) => n is JsonValue v && v.TryGetValue<double>(out var d) && double.IsFinite(d) ? d : null;
        static int? AsInt(JsonNode? n, int min) => AsNumber(n) is double d && d == Math.Floor(d) && d >= min && d <= 1 << 20 ? (int)d : null;
        static int? AsRank(JsonNode? n) => AsInt(n, 0);
        var peftType = Str("peft_type") ?? throw new InvalidDataException($"'{path}' has no peft_type");
        var method = peftType switch
        {
            "LORA" => Bool("use_dora") ? TuningMethod.Dora : TuningMethod.Lora,
            "ADALORA" => TuningMethod.AdaLora,
            "BOTTLENECK_ADAPTER" => TuningMethod.Adapter,
            _ => throw new InvalidDataException($"'{path}': peft_type '{peftType}' is not supported (LORA, ADALORA, BOTTLENECK_ADAPTER are)"),
        };
        var bias = Str("bias") switch
        {
            null or "none" => BiasMode.None,
            "lora_only" => BiasMode.LoraOnly,
            "all" => BiasMode.All,
            var b => throw new InvalidDataException($"'{path}': bias '{b}' is not one of none, lora_only, all"),
        };
        foreach (var unsupported in new[] { "layers_to_transform", "layers_pattern", "exclude_modules", "layer_replication", "target_parameters" })
            if (root[unsupported] is JsonNode n && !(n is JsonArray { Count: 0 }))
                throw new InvalidDataException($"'{path}': {unsupported} is set ({n.ToJsonString()}), which this loader does not support; save the adapter without it");
        if (root["fan_in_fan_out"] is JsonValue f && f.TryGetValue<bool>(out var fifo) && fifo)
            throw new InvalidDataException($"'{path}': fan_in_fan_out = true (GPT-2 Conv1D layers) is not supported");
        var config = new TuningConfig
        {
            Method = method,
            Targets = method == TuningMethod.Adapter ? Array.Empty<string>() : StrList("target_modules"),
            Rank = Int("r", 1) ?? 8,
            Alpha = Num("lora_alpha") ?? 8,
            Dropout = Num("lora_dropout") ?? 0,
            UseRsLora = Bool("use_rslora"),
            // PEFT writes true/false or the name of an initialisation
            InitGaussian = root["init_lora_weights"] is JsonValue init && init.TryGetValue<string>(out var how) && how == "gaussian",
            Bias = bias,
            ModulesToSave = StrList("modules_to_save"),
            AlphaPattern = Pattern("alpha_pattern", AsNumber),
            RankPattern = method != TuningMethod.AdaLora ? Pattern("rank_pattern", AsRank) : new Dictionary<string, int>(),
            InitRank = Int("init_r", 1) ?? 12,
            TargetRank = Int("target_r", 1) ?? 8,
            Beta1 = Num("beta1") ?? 0.85,
            Beta2 = Num("beta2") ?? 0.85,
            TInit = Int("tinit", 0) ?? 0,
            TFinal = Int("tfinal", 0) ?? 0,
            DeltaT = Int("deltaT", 1) ?? 1,
            OrthRegWeight = Num("orth_reg_weight") ?? 0.5,
            TotalStep = Int("total_step", 0) ?? 0,
            AdapterRatio = Num("adapter_ratio") ?? 0.25,
            AdapterWidth = Int("adapter_width", 0) ?? 0,
            AdapterMlpScale = Num("adapter_mlp_scale") ?? 0.5,
        };
        Dictionary<string, bool[]>? pattern = null;
        if (method == TuningMethod.AdaLora && root["rank_pattern"] is JsonObject arp && arp.Count > 0)
        {
            pattern = new Dictionary<string, bool[]>();
            foreach (var (k, v) in arp)
            {
                var i = k.IndexOf(".lora_E", StringComparison.Ordinal);
                pattern[i < 0 ? k : k[..i]] = v is JsonArray a
                    ? a.Select(x => x is JsonValue b && b.TryGetValue<bool>(out var keep) ? keep : throw Wrong($"rank_pattern['{k}']", "a list of booleans", v)).ToArray()
                    : throw Wrong($"rank_pattern['{k}']", "a list of booleans", v);
            }
        }
        return (config, pattern);
    }

    /// Applies the adapter saved in <paramref name="folder"/> to <paramref name="model"/> (creating
    /// the layers from its config) and loads its weights. Every missing key, unexpected key and shape
    /// mismatch is reported at once; on any error the model is left as it was.
    public static TunedModel Load(nn.Module model, string folder, string adapterName = "default")
    {
        var (config, pattern) = ReadConfig(folder);
        var weightsPath = Path.Combine(folder, WeightsFile);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"no {WeightsFile} in '{folder}'", weightsPath);
        // checked from the header: no tensor data is read from a file that does not fit
        var header = Safetensors.ReadHeader(weightsPath).Entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
        Dictionary<string, Tensor>? file = null;
        var tuned = Tuner.Apply(model, config, adapterName);
        try
        {
            if (pattern is not null) tuned.ApplyLoadedRankPattern(adapterName, pattern);
            var (expected, _) = Collect(tuned, adapterName, forSave: false);
            var problems = new List<string>();
            foreach (var (k, live) in expected)
            {
                if (!header.TryGetValue(k, out var t)) problems.Add($"missing key '{k}' (expected shape [{string.Join(", ", live.shape)}])");
                else if (!t.Shape.SequenceEqual(live.shape))
                    problems.Add($"key '{k}' has shape [{string.Join(", ", t.Shape)}] but the model needs [{string.Join(", ", live.shape)}]");
                // an int8 or bool tensor would be cast silently into a different adapter
                else if (!Safetensors.IsFloat(t)) problems.Add($"key '{k}' has dtype {t.DType}: adapter weights must be floating point");
            }
            foreach (var k in header.Keys.Where(k => !expected.ContainsKey(k)).Order())
                problems.Add($"unexpected key '{k}' (no such tuning parameter in the model with this config)");
            if (problems.Count > 0)
                throw new InvalidDataException($"the adapter in '{folder}' does not fit this {model.GetType().Name}:\n  " + string.Join("\n  ", problems));
            file = Safetensors.Load(weightsPath);
            using (torch.no_grad())
                foreach (var (k, live) in expected) live.copy_(file[k]);
            return tuned;
        }
        catch
        {
            tuned.DeleteAdapter(adapterName);
            if (tuned.Configs.Count == 0) tuned.Unload();
            throw;
        }
        finally
        {
            if (file is not null) foreach (var t in file.Values) t.Dispose();
        }
    }

    /// PEFT key → live tensor. For a save, AdaLoRA triplets are sliced to the kept ranks (copies);
    /// for a load, live parameters are returned (already resized by the rank pattern).
    static (Dictionary<string, Tensor> Tensors, Dictionary<string, bool[]>? Pattern) Collect(TunedModel model, string adapter, bool forSave)
    {
        var config = model.Configs[adapter];
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var fullPattern = model.RankPattern(adapter);
        Dictionary<string, bool[]>? usedPattern = null;
        foreach (var (path, layer) in model.Layers)
        {
            if (!layer.AdapterNames.Contains(adapter)) continue;
            var p = Prefix + path + ".";
            switch (layer)
            {
                case LoraLinear l:
                    result[p + "lora_A.weight"] = l.A(adapter).weight!;
                    result[p + "lora_B.weight"] = l.B(adapter).weight!;
                    if (l.Options(adapter).UseDora) result[p + "lora_magnitude_vector"] = l.lora_magnitude_vector.Module<DoraMagnitude>(adapter).weight;
                    break;
                case LoraConv2d c:
                    result[p + "lora_A.weight"] = c.A(adapter).weight!;
                    result[p + "lora_B.weight"] = c.B(adapter).weight!;
                    if (c.Options(adapter).UseDora) result[p + "lora_magnitude_vector"] = c.lora_magnitude_vector.Module<DoraMagnitude>(adapter).weight;
                    break;
                case AdaLoraLinear a:
                    Tensor A = a.A(adapter), E = a.E(adapter), B = a.B(adapter);
                    if (forSave && fullPattern is not null && fullPattern.TryGetValue(path, out var keep))
                    {
                        (usedPattern ??= new())[path] = keep;
                        if (keep.Length == A.shape[0] && keep.Any(k => !k))
                        {
                            using var idx = torch.tensor(Enumerable.Range(0, keep.Length).Where(i => keep[i]).Select(i => (long)i).ToArray(), device: A.device);
                            A = A.index_select(0, idx); E = E.index_select(0, idx); B = B.index_select(1, idx);
                        }
                    }
                    result[p + "lora_A"] = A;
                    result[p + "lora_E"] = E;
                    result[p + "lora_B"] = B;
                    break;
            }
            if (config.Bias == BiasMode.LoraOnly)
                foreach (var (n, t) in layer.base_layer.named_parameters()) if (n == "bias") result[p + "base_layer.bias"] = t;
        }
        foreach (var (path, w) in model.SavedModules)
            if (w.AdapterNames.Contains(adapter))
                foreach (var (n, t) in w.Copy(adapter).named_parameters()) result[Prefix + path + "." + n] = t;
        foreach (var path in model.TrainedInPlace(adapter))
            foreach (var (n, t) in ModuleTree.Get(model.Model, path).named_parameters()) result[Prefix + path + "." + n] = t;
        if (config.Method == TuningMethod.Adapter)
            foreach (var (n, t) in model.Model.named_parameters())
                if (n.Contains("adapter_attn.") || n.Contains("adapter_mlp.")) result[Prefix + n] = t;
        if (config.Bias == BiasMode.All)
            foreach (var (n, t) in model.Model.named_parameters())
                if (n.Split('.')[^1] == "bias" && !n.Contains(".original_module.") && !n.Contains(".modules_to_save."))
                    result.TryAdd(Prefix + n, t);
        return (result, usedPattern);
    }

    static IReadOnlyList<string> PeftModuleNames(TunedModel model, IReadOnlyList<string> patterns)
    {
        var paths = model.Model.named_modules().Select(m => m.name)
            .Where(n => n.Length > 0 && !n.Contains(".original_module") && !n.Contains(".modules_to_save")).ToList();
        return patterns.SelectMany(p => ModulePattern.IsRegex(p) ? paths.Where(n => ModulePattern.Matches(p, n)) : [p]).Distinct().ToList();
    }

    static JsonObject ConfigJson(TuningConfig c, Dictionary<string, bool[]>? pattern, string adapter)
    {
        // PEFT's target_modules: a list of names/dotted suffixes, or one regular expression that
        // must match the whole path; with any regex among the targets, all become one alternation
        JsonNode? Targets(IReadOnlyList<string> ts) =>
            ts.Count == 0 ? null
            : ts.Any(ModulePattern.IsRegex) ? JsonValue.Create(string.Join("|", ts.Select(t =>
                ModulePattern.IsRegex(t) ? (ts.Count == 1 ? t[3..] : $"(?:{t[3..]})") : $"(?:.*\\.)?{System.Text.RegularExpressions.Regex.Escape(t)}")))
            : new JsonArray(ts.Select(t => (JsonNode?)JsonValue.Create(t)).ToArray());
        var o = new JsonObject
        {
            ["peft_type"] = c.Method switch { TuningMethod.AdaLora => "ADALORA", TuningMethod.Adapter => "BOTTLENECK_ADAPTER", _ => "LORA" },
            ["task_type"] = null,
            ["base_model_name_or_path"] = null,
            ["inference_mode"] = true,
            ["r"] = c.Rank,
            ["lora_alpha"] = c.Alpha,
            ["lora_dropout"] = c.Dropout,
            ["target_modules"] = Targets(c.Targets),
            ["bias"] = c.Bias switch { BiasMode.LoraOnly => "lora_only", BiasMode.All => "all", _ => "none" },
            ["modules_to_save"] = c.ModulesToSave.Count == 0 ? null : new JsonArray(c.ModulesToSave.Select(t => (JsonNode?)JsonValue.Create(t)).ToArray()),
            ["fan_in_fan_out"] = false,
            ["use_rslora"] = c.UseRsLora,
            ["use_dora"] = c.Method == TuningMethod.Dora,
            ["init_lora_weights"] = c.InitGaussian ? JsonValue.Create("gaussian") : JsonValue.Create(true),
            ["alpha_pattern"] = new JsonObject(c.AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
        };
        if (c.Method == TuningMethod.AdaLora)
        {
            o["init_r"] = c.InitRank; o["target_r"] = c.TargetRank; o["beta1"] = c.Beta1; o["beta2"] = c.Beta2;
            o["tinit"] = c.TInit; o["tfinal"] = c.TFinal; o["deltaT"] = c.DeltaT; o["orth_reg_weight"] = c.OrthRegWeight;
            o["total_step"] = c.TotalStep == 0 ? null : c.TotalStep;
            o["rank_pattern"] = pattern is null ? null : new JsonObject(pattern.Select(kv => KeyValuePair.Create($"{kv.Key}.lora_E.{adapter}",
                (JsonNode?)new JsonArray(kv.Value.Select(b => (JsonNode?)JsonValue.Create(b)).ToArray()))));
        }
        else o["rank_pattern"] = new JsonObject(c.RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        if (c.Method == TuningMethod.Adapter)
        {
            o["adapter_ratio"] = c.AdapterRatio; o["adapter_width"] = c.AdapterWidth; o["adapter_mlp_scale"] = c.AdapterMlpScale; o["adapter_init_identity"] = c.AdapterInitIdentity;
        }
        return o;
    }
}
