using Lora.Core.IO;
using Lora.Core.Tuning;
using Lora.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// What the model commands (summary, merge, predict, forward, export) share: a zoo model from a name, an optional
/// JSON file of timm constructor arguments and a class count; and errors shortened to one line.
static class ModelSource
{
    /// The constructor arguments: --model-config's JSON object, then --classes over it.
    public static ModelArgs Args(string? modelConfig, int? classes = null)
    {
        var args = modelConfig is null ? ModelArgs.Empty : ModelArgs.FromFile(modelConfig);
        return classes is { } n ? args.With("num_classes", (double)n) : args;
    }

    /// Creates the model; an unknown name or a bad argument is a <see cref="BadModelException"/>
    /// (the user's command line is wrong, exit code 2), not a file problem.
    public static nn.Module<Tensor, Tensor> Create(string name, ModelArgs args, Device? device = null)
    {
        if (IsOnnx(name)) return ImportOnnx(name, args, device);
        try { return Zoo.Create(name, args, device); }
        catch (ArgumentException e) { throw new BadModelException(e.Message); }
    }

    /// `--model PATH.onnx`: an ONNX file rather than a zoo name.
    public static bool IsOnnx(string model) => model.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);

    /// An imported ONNX graph; num_classes (from --model-config or --classes) gives it a new head.
    public static Lora.Core.Onnx.OnnxModule ImportOnnx(string path, ModelArgs args, Device? device = null)
    {
        var m = Lora.Conversion.ToCore.importOnnx(path, args);
        if (device is not null) m.to(device);
        return m;
    }

    /// The image size and channels a classifier expects, from its card (timm's default 224 where
    /// the model does not fix its size, e.g. ConvNeXt; an img_size argument overrides).
    public static (int Size, int Channels) InputShape(nn.Module model, ModelArgs args)
    {
        var card = Zoo.Card(model);
        return ((int)(card.InputSize ?? args.Long("img_size", 224)), (int)card.InChans);
    }

    /// A multi-line message (e.g. a strict load's key listings) as one line: each heading with at
    /// most three of its items.
    public static string OneLine(string message)
    {
        var parts = new List<string>();
        List<string>? items = null;
        int more = 0;
        void Flush()
        {
            if (items is null || parts.Count == 0) return;
            parts[^1] = parts[^1].TrimEnd(':') + ": " + string.Join(", ", items) + (more > 0 ? $", ... and {more} more" : "");
            items = null; more = 0;
        }
        foreach (var raw in message.Split('\n'))
        {
            var line = raw.TrimEnd();
            if (line.Length == 0) continue;
            if (char.IsWhiteSpace(line[0]))
            {
                var item = line.Trim();
                if (item.StartsWith("... and ", StringComparison.Ordinal) && int.TryParse(item.Split(' ')[2], out var n)) { more += n; continue; }
                items ??= new List<string>();
                if (items.Count < 3) items.Add(item); else more++;
            }
            else { Flush(); parts.Add(line); }
        }
        Flush();
        return string.Join(" ", parts.Select(p => p.EndsWith('.') || p.EndsWith(':') ? p : p + ";")).TrimEnd(';');
    }

    /// The adapter folder; a path to its adapter_model.safetensors or adapter_config.json also works.
    public static string AdapterFolder(string path) =>
        File.Exists(path) && Path.GetFileName(path) is AdapterCheckpoint.WeightsFile or AdapterCheckpoint.ConfigFile
            ? Path.GetDirectoryName(Path.GetFullPath(path))!
            : Directory.Exists(path) ? InMultiAdapterFolder(path)
            : File.Exists(path) ? throw new InvalidDataException($"'{path}' is a file, not an adapter folder (expected a PEFT folder with {AdapterCheckpoint.ConfigFile} and {AdapterCheckpoint.WeightsFile})")
            : throw new DirectoryNotFoundException($"adapter folder '{path}' does not exist (expected a PEFT folder with {AdapterCheckpoint.ConfigFile} and {AdapterCheckpoint.WeightsFile})");

    /// A folder without an adapter at its root but with some in subfolders (PEFT's layout of several):
    /// which to give (see `lora adapters`).
    static string InMultiAdapterFolder(string path) =>
        File.Exists(Path.Combine(path, AdapterCheckpoint.ConfigFile)) || AdaptersCommand.Find(path) is not { Count: > 0 } found ? path
        : throw new InvalidDataException($"'{path}' has no default adapter at its root but {found.Count} in subfolders ({string.Join(", ", found.Select(f => f.Name))}): give --adapter {Path.Combine(path, found[0].Name)} (lora adapters list {path})");

    /// "give --model or --run" when neither or both are given, else null.
    public static string? OneOf(string? model, string? run) =>
        model is null && run is null ? "give --model NAME (with its weights) or --run HASH (a finished run)"
        : model is not null && run is not null ? "give --model or --run, not both (a run's card names its model)"
        : null;

    /// An adapter folder applied to the model: merged (merge-and-unload) when the method can merge;
    /// otherwise kept as it is, or refused with the method's reason when <paramref name="mustMerge"/>.
    public static nn.Module<Tensor, Tensor> ApplyAdapter(nn.Module<Tensor, Tensor> model, string adapter, bool mustMerge) =>
        MergeAdapters(model, One(adapter), plain: mustMerge);

    /// One adapter folder, weight 1: what a single --adapter (or a run's own adapter) is.
    public static Lora.CommandLine.AdapterChoice One(string adapter, bool disabled = false) =>
        new(Microsoft.FSharp.Collections.ListModule.OfSeq([adapter]), Microsoft.FSharp.Collections.FSharpList<double>.Empty, "cat", null, null, disabled);

    /// The name of the adapter a weighted combination of the command line's adapters gets.
    public const string CombinedName = "combined";

    /// The model in eval mode: --weights loaded strictly, then the command line's adapters (one, or
    /// several combined) merged in (merge-and-unload); with --disable-adapter they stay in the model,
    /// disabled (forward and predict run through the disabled layers), or are unloaded when
    /// <paramref name="plain"/> (export needs plain layers).
    public static nn.Module<Tensor, Tensor> LoadMerged(string name, string? modelConfig, string? weights, Lora.CommandLine.AdapterChoice adapters, bool plain = false)
    {
        var model = Create(name, Args(modelConfig));
        if (weights is not null) StateDict.Load(model, weights, strict: true);
        model = MergeAdapters(model, adapters, plain);
        model.eval();
        return model;
    }

    /// The model with the command line's adapters merged in (see <see cref="LoadMerged"/>).
    public static nn.Module<Tensor, Tensor> MergeAdapters(nn.Module<Tensor, Tensor> model, Lora.CommandLine.AdapterChoice adapters, bool plain = false)
    {
        if (ApplyAdapters(model, adapters) is not { } tuned) return model;
        if (adapters.Disabled) return plain ? (nn.Module<Tensor, Tensor>)tuned.Unload() : model;
        // a method that cannot merge (a bottleneck Adapter) runs in place for forward and predict
        // (the same outputs); plain layers (merge, export) refuse it with the method's reason
        bool mergeable = tuned.ActiveAdapter is not { } a || tuned.Configs[a].Method.NotMergeable is null;
        return mergeable || plain ? (nn.Module<Tensor, Tensor>)tuned.MergeAndUnload() : model;
    }

    /// The command line's adapters applied to the model (its weights already loaded): none → null;
    /// one with weight 1 → loaded as it is (any method); several, or a weight other than 1 → combined
    /// (<see cref="Combine"/>); --disable-adapter → then disabled.
    public static TunedModel? ApplyAdapters(nn.Module model, Lora.CommandLine.AdapterChoice adapters)
    {
        if (adapters.Paths.IsEmpty) return null;
        var tuned = adapters.Combined ? Combine(model, adapters) : AdapterCheckpoint.Load(model, AdapterFolder(adapters.Paths.Head));
        if (adapters.Disabled) tuned.DisableAdapters();
        return tuned;
    }

    /// Loads each adapter under its folder's name and adds their weighted combination (PEFT's
    /// add_weighted_adapter) as the active adapter <see cref="CombinedName"/>; its modules to save
    /// (a trained head) are the first adapter's that has them. Adapters that train biases are
    /// refused: each would write its own into the one base layer.
    public static TunedModel Combine(nn.Module model, Lora.CommandLine.AdapterChoice adapters)
    {
        var folders = adapters.Paths.Select(AdapterFolder).ToList();
        foreach (var f in folders)
            if (AdapterCheckpoint.ReadConfig(f).Config.Bias != BiasMode.None)
                throw new ArgumentException($"'{f}' trains biases (bias is not none): combined adapters would overwrite each other's biases in the base layers; merge it alone");
        var names = AdapterNames(folders);
        TunedModel tuned = null!;
        for (int i = 0; i < folders.Count; i++) tuned = AdapterCheckpoint.Load(model, folders[i], names[i]);
        var weights = adapters.Weights.IsEmpty ? names.Select(_ => 1.0).ToList() : adapters.Weights.ToList();
        var combination = adapters.Combination switch { "linear" => Combination.Linear, "svd" => Combination.Svd, _ => Combination.Cat };
        var heads = names.FirstOrDefault(n => tuned.Configs[n].ModulesToSave.Count > 0);
        try { tuned.AddWeightedAdapter(names, weights, CombinedName, combination, adapters.SvdRank, adapters.SvdClamp, heads); }
        catch (ArgumentException e)
        {
            // the user named folders, not adapters: say which folder
            var message = e.Message;
            for (int i = 0; i < names.Count; i++) message = message.Replace($"'{names[i]}'", $"'{adapters.Paths[i]}'");
            throw new ArgumentException(message, e);
        }
        tuned.SetActiveAdapter(CombinedName);
        return tuned;
    }

    /// An adapter name per folder: its folder name ('.' → '_'), made unique.
    static List<string> AdapterNames(IEnumerable<string> folders)
    {
        var names = new List<string>();
        foreach (var f in folders)
        {
            var stem = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(f))).Replace('.', '_');
            if (stem.Length == 0 || stem == CombinedName) stem = "adapter";
            var name = stem;
            for (int k = 2; names.Contains(name); k++) name = $"{stem}_{k}";
            names.Add(name);
        }
        return names;
    }

    /// The adapters and weights as a short text: "a ×0.7 + b ×0.3 (svd)", or the one path.
    public static string Describe(Lora.CommandLine.AdapterChoice adapters, bool weighted = false) =>
        !adapters.Combined && !weighted ? string.Join(", ", adapters.Paths)
        : string.Join(" + ", adapters.Paths.Select((p, i) => $"{p} ×{(adapters.Weights.IsEmpty ? 1.0 : adapters.Weights[i]).ToString(System.Globalization.CultureInfo.InvariantCulture)}"))
          + $" ({adapters.Combination})";
}

/// The model named on the command line does not exist or cannot take the given arguments.
sealed class BadModelException(string message) : Exception(message);
