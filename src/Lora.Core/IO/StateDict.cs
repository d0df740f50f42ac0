using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.IO;

/// What a non-strict load left out: model keys the file lacked, file keys the model has no place for.
public sealed record LoadReport(IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected);

/// Moves a module's state dict (timm key names) to and from safetensors files.
public static class StateDict
{
    /// Copies the tensors of a timm-format safetensors file into module's parameters and buffers
    /// (converted to each target's dtype and device). Wrong shapes are always an error; with strict,
    /// so are missing and unexpected keys. All problems are listed in one InvalidDataException, and
    /// nothing is copied unless the whole file fits.
    /// Keys for which <paramref name="skip"/> returns true are left as the model has them (used to
    /// transfer a backbone whose classifier head has another number of classes).
    /// BatchNorm's num_batches_tracked counters may be absent (torchvision's and many timm
    /// checkpoints drop them; PyTorch's BatchNorm loads such files too): the model keeps its own.
    public static LoadReport Load(nn.Module module, string path, bool strict = true, Func<string, bool>? skip = null)
    {
        var source = Safetensors.Load(path);
        try
        {
            var target = module.state_dict();
            if (skip is not null)
            {
                foreach (var k in source.Keys.Where(skip).ToList()) { source[k].Dispose(); source.Remove(k); }
                target = target.Where(kv => !skip(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
            }
            var missing = target.Keys.Where(k => !source.ContainsKey(k) && !k.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToList();
            var unexpected = source.Keys.Where(k => !target.ContainsKey(k)).ToList();
            var wrongShape = target.Where(kv => source.TryGetValue(kv.Key, out var s) && !s.shape.SequenceEqual(kv.Value.shape))
                .Select(kv => $"{kv.Key} (file [{string.Join(", ", source[kv.Key].shape)}], model [{string.Join(", ", kv.Value.shape)}])")
                .ToList();
            var problems = new List<string>();
            if (strict && missing.Count > 0) problems.Add(Listing($"{missing.Count} missing key(s) (in the model, not in the file)", missing));
            if (strict && unexpected.Count > 0) problems.Add(Listing($"{unexpected.Count} unexpected key(s) (in the file, not in the model)", unexpected));
            if (wrongShape.Count > 0) problems.Add(Listing($"{wrongShape.Count} key(s) with the wrong shape", wrongShape));
            if (problems.Count > 0)
                throw new InvalidDataException(
                    $"{path} does not fit the {module.GetName()} model:\n{string.Join("\n", problems)}\n" +
                    "Check that the model name and its configuration (--model-config) match the checkpoint.");
            using (no_grad())
            {
                foreach (var (key, t) in target)
                    if (source.TryGetValue(key, out var s)) t.copy_(s.to(t.dtype, t.device));
            }
            return new LoadReport(missing, unexpected);
        }
        finally
        {
            foreach (var t in source.Values) t.Dispose();
        }
    }

    /// Writes module's state dict with exactly its (timm) keys, atomically.
    public static void Save(nn.Module module, string path, IReadOnlyDictionary<string, string>? metadata = null) =>
        Safetensors.Save(path, module.state_dict(), metadata);

    private static string Listing(string title, IReadOnlyList<string> items, int max = 20)
    {
        var shown = items.Take(max).Select(i => "  " + i);
        var more = items.Count > max ? new[] { $"  ... and {items.Count - max} more" } : Array.Empty<string>();
        return title + ":\n" + string.Join("\n", shown.Concat(more));
    }
}
