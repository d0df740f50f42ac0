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

    /// An attached tensor's key that starts with this is saved as it is, not under the model's
    /// prefix (VeRA's shared `base_model.vera_A`, which PEFT keeps beside the model).
    public const string OutsideModel = "base_model.";

    /// Writes the adapter's config and weights into <paramref name="folder"/> (created if needed).
    public static void Save(TunedModel model, string folder, string adapter = "default")
    {
        if (!model.Configs.TryGetValue(adapter, out var config)) throw new ArgumentException($"the model has no adapter named '{adapter}'");
        Directory.CreateDirectory(folder);
        var (tensors, pattern) = Collect(model, adapter, forSave: true);
        // the method's own fixes of what PEFT's config classes require (AdaLoRA's total_step)
        if (model.Attached(adapter) is { } attached) config = attached.ConfigToSave(config);
        // PEFT's modules_to_save are names matched as suffixes: a regular expression is written
        // as the module paths it matched
        if (config.ModulesToSave.Any(ModulePattern.IsRegex))
            config = config with { ModulesToSave = PeftModuleNames(model, config.ModulesToSave) };
        var json = config.Method.WriteConfig(config, pattern, adapter).ToJsonString(new JsonSerializerOptions { WriteIndented = true });
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
        var json = new AdapterConfigReader(root, path);
        var peftType = json.Str("peft_type") ?? throw new InvalidDataException($"'{path}' has no peft_type");
        var method = TuningMethods.ByPeftType(peftType)
            ?? throw new InvalidDataException($"'{path}': peft_type '{peftType}' is not supported ({string.Join(", ", TuningMethods.Registered.Select(m => m.PeftType))} are)");
        json.Bias();
        foreach (var unsupported in new[] { "layers_to_transform", "layers_pattern", "exclude_modules", "layer_replication", "target_parameters" })
            if (root[unsupported] is JsonNode n && !(n is JsonArray { Count: 0 }))
                throw new InvalidDataException($"'{path}': {unsupported} is set ({n.ToJsonString()}), which this loader does not support; save the adapter without it");
        if (root["fan_in_fan_out"] is JsonValue f && f.TryGetValue<bool>(out var fifo) && fifo)
            throw new InvalidDataException($"'{path}': fan_in_fan_out = true (GPT-2 Conv1D layers) is not supported");
        return method.ReadConfig(json);
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

    /// PEFT key → live tensor: each layer's own tensors, the attached parts' (bottleneck adapters),
    /// the modules to save and the biases the bias mode trains. For a save, AdaLoRA's layers give
    /// their triplets sliced to the kept ranks (copies); for a load, live parameters (already
    /// resized by the rank pattern).
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
            bool[]? keep = null;
            if (forSave && fullPattern is not null && fullPattern.TryGetValue(path, out keep)) (usedPattern ??= new())[path] = keep;
            foreach (var (k, t) in layer.PeftTensors(adapter, keep)) result[p + k] = t;
            if (config.Bias == BiasMode.LoraOnly)
                foreach (var (n, t) in layer.base_layer.named_parameters()) if (n == "bias") result[p + "base_layer.bias"] = t;
        }
        foreach (var (path, w) in model.SavedModules)
            if (w.AdapterNames.Contains(adapter))
                foreach (var (n, t) in w.Copy(adapter).named_parameters()) result[Prefix + path + "." + n] = t;
        foreach (var path in model.TrainedInPlace(adapter))
            foreach (var (n, t) in ModuleTree.Get(model.Model, path).named_parameters()) result[Prefix + path + "." + n] = t;
        if (model.Attached(adapter) is { } attached)
            foreach (var (k, t) in attached.Tensors()) result[k.StartsWith(OutsideModel, StringComparison.Ordinal) ? k : Prefix + k] = t;
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
}
