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
        var target = module.state_dict();
        if (skip is not null) target = target.Where(kv => !skip(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
        // decided from the header: nothing is read from a file that does not fit
        void Check(Safetensors.Header header)
        {
            var file = header.Entries.Where(e => skip is null || !skip(e.Name)).ToDictionary(e => e.Name, e => e.Shape, StringComparer.Ordinal);
            var missing = target.Keys.Where(k => !file.ContainsKey(k) && !k.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToList();
            var unexpected = file.Keys.Where(k => !target.ContainsKey(k)).ToList();
            var wrongShape = target.Where(kv => file.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value.shape))
                .Select(kv => $"{kv.Key} (file [{string.Join(", ", file[kv.Key])}], model [{string.Join(", ", kv.Value.shape)}])")
                .ToList();
            var problems = new List<string>();
            if (strict && missing.Count > 0) problems.Add(Listing($"{missing.Count} missing key(s) (in the model, not in the file)", missing));
            if (strict && unexpected.Count > 0) problems.Add(Listing($"{unexpected.Count} unexpected key(s) (in the file, not in the model)", unexpected));
            if (wrongShape.Count > 0) problems.Add(Listing($"{wrongShape.Count} key(s) with the wrong shape", wrongShape));
            if (problems.Count > 0)
                throw new InvalidDataException(
                    $"{path} does not fit the {module.GetName()} model:\n{string.Join("\n", problems)}\n" +
                    "Check that the model name and its configuration (--model-config) match the checkpoint.");
        }
        var source = Safetensors.Load(path, Check);
        try
        {
            var missingKeys = target.Keys.Where(k => !source.ContainsKey(k) && !k.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToList();
            var unexpectedKeys = source.Keys.Where(k => !target.ContainsKey(k) && (skip is null || !skip(k))).ToList();
            using (no_grad())
            {
                foreach (var (key, t) in target)
                    if (source.TryGetValue(key, out var s))
                    {
                        using var converted = s.to(t.dtype, t.device); // held across copy_ (see HeldScalars)
                        t.copy_(converted);
                    }
            }
            return new LoadReport(missingKeys, unexpectedKeys);
        }
        finally
        {
            foreach (var t in source.Values) t.Dispose();
        }
    }

    /// Writes module's state dict with exactly its (timm) keys, atomically. Refuses (naming the
    /// tensor) weights that are NaN or infinite: such a file would load and then predict garbage.
    public static void Save(nn.Module module, string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var state = module.state_dict();
        foreach (var (key, t) in state) RequireFinite(key, t);
        Safetensors.Save(path, state, metadata);
    }

    /// Throws InvalidDataException when a floating-point tensor holds NaN or infinite values.
    public static void RequireFinite(string name, Tensor t)
    {
        if (!t.is_floating_point()) return;
        using var finite = t.isfinite();
        using var all = finite.all();
        if (all.item<bool>()) return;
        using var bad = finite.logical_not();
        using var count = bad.sum();
        throw new InvalidDataException($"tensor '{name}' has {count.item<long>()} NaN or infinite value(s) of {t.NumberOfElements}: refusing to write it (the adapter's weights or scaling overflow)");
    }

    private static string Listing(string title, IReadOnlyList<string> items, int max = 20)
    {
        var shown = items.Take(max).Select(i => "  " + i);
        var more = items.Count > max ? new[] { $"  ... and {items.Count - max} more" } : Array.Empty<string>();
        return title + ":\n" + string.Join("\n", shown.Concat(more));
    }
}
