using Lora.Core.IO;
using Lora.Core.Tuning;
using Lora.Dsl;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora merge --model NAME --weights base.safetensors --adapter DIR --out merged.safetensors`:
/// loads timm weights (strict) and a PEFT adapter folder, merges the adapter into the weights and
/// writes a plain timm checkpoint with exactly the base file's keys. The output is written in one
/// atomic step at the end, so a failure leaves no file behind.
public static class MergeCommand
{
    public static int Run(MergeOptions o, TextWriter stdout)
    {
        var args = ModelSource.Args(o.ModelConfig);
        using var model = ModelSource.Create(o.Model, args);
        StateDict.Load(model, o.Weights, strict: true);
        var baseKeys = model.state_dict().Keys.ToList();
        var tuned = AdapterCheckpoint.Load(model, AdapterFolder(o.Adapter));
        var layers = tuned.Layers.Count;
        var merged = tuned.MergeAndUnload();
        var keys = merged.state_dict().Keys.ToList();
        if (!keys.Order(StringComparer.Ordinal).SequenceEqual(baseKeys.Order(StringComparer.Ordinal)))
            throw new InvalidDataException($"merging left keys that are not the base model's ({string.Join(", ", keys.Except(baseKeys).Take(3))}); nothing was written");
        StateDict.Save(merged, o.Out, new Dictionary<string, string> { ["format"] = "pt" });
        stdout.WriteLine($"merged {layers} tuned layer(s) of {o.Adapter} into {o.Weights}: wrote {o.Out} ({keys.Count} tensors)");
        return 0;
    }

    /// The adapter folder; a path to its adapter_model.safetensors or adapter_config.json also works.
    static string AdapterFolder(string path) =>
        File.Exists(path) && Path.GetFileName(path) is AdapterCheckpoint.WeightsFile or AdapterCheckpoint.ConfigFile
            ? Path.GetDirectoryName(Path.GetFullPath(path))!
            : Directory.Exists(path) ? path
            : File.Exists(path) ? throw new InvalidDataException($"'{path}' is a file, not an adapter folder (expected a PEFT folder with {AdapterCheckpoint.ConfigFile} and {AdapterCheckpoint.WeightsFile})")
            : throw new DirectoryNotFoundException($"adapter folder '{path}' does not exist (expected a PEFT folder with {AdapterCheckpoint.ConfigFile} and {AdapterCheckpoint.WeightsFile})");
}
