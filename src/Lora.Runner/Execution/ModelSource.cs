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
            : Directory.Exists(path) ? path
            : File.Exists(path) ? throw new InvalidDataException($"'{path}' is a file, not an adapter folder (expected a PEFT folder with {AdapterCheckpoint.ConfigFile} and {AdapterCheckpoint.WeightsFile})")
            : throw new DirectoryNotFoundException($"adapter folder '{path}' does not exist (expected a PEFT folder with {AdapterCheckpoint.ConfigFile} and {AdapterCheckpoint.WeightsFile})");

    /// "give --model or --run" when neither or both are given, else null.
    public static string? OneOf(string? model, string? run) =>
        model is null && run is null ? "give --model NAME (with its weights) or --run HASH (a finished run)"
        : model is not null && run is not null ? "give --model or --run, not both (a run's card names its model)"
        : null;

    /// An adapter folder applied to the model: merged (merge-and-unload) when the method can merge;
    /// otherwise kept as it is, or refused with the method's reason when <paramref name="mustMerge"/>.
    public static nn.Module<Tensor, Tensor> ApplyAdapter(nn.Module<Tensor, Tensor> model, string adapter, bool mustMerge)
    {
        var tuned = AdapterCheckpoint.Load(model, AdapterFolder(adapter));
        bool mergeable = tuned.ActiveAdapter is not { } a || tuned.Configs[a].Method.NotMergeable is null;
        return mergeable || mustMerge ? (nn.Module<Tensor, Tensor>)tuned.MergeAndUnload() : model;
    }

    /// The model in eval mode: --weights loaded strictly, then --adapter merged in (merge-and-unload).
    public static nn.Module<Tensor, Tensor> LoadMerged(string name, string? modelConfig, string? weights, string? adapter)
    {
        var model = Create(name, Args(modelConfig));
        if (weights is not null) StateDict.Load(model, weights, strict: true);
        if (adapter is not null) model = (nn.Module<Tensor, Tensor>)AdapterCheckpoint.Load(model, AdapterFolder(adapter)).MergeAndUnload();
        model.eval();
        return model;
    }
}

/// The model named on the command line does not exist or cannot take the given arguments.
sealed class BadModelException(string message) : Exception(message);
