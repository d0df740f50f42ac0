using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// Parameter counts of a (tuned) model: total, trainable, non-trainable, per group, and the tuned
/// modules grouped by method and by path with block indices folded (`blocks.*.attn.qkv ×12`).
public sealed record ParameterSummary(
    long Total,
    long Trainable,
    IReadOnlyDictionary<string, (long Total, long Trainable)> ByGroup,
    IReadOnlyList<string> TunedModules)
{
    public long NonTrainable => Total - Trainable;

    /// trainedInPlace: module paths trained whole in place (<see cref="TunedModel.TrainedInPlace"/>),
    /// grouped as modules_to_save.
    public static ParameterSummary Of(nn.Module model, IEnumerable<string>? trainedInPlace = null)
    {
        var groups = new SortedDictionary<string, (long, long)>(StringComparer.Ordinal);
        var tunedPaths = new List<(string Method, string Path)>();
        // module prefix → the group of a parameter under it (named relative to the module)
        var owners = new List<(string Prefix, Func<string, string> Group)>();
        foreach (var (path, m) in ModuleTree.Descendants(model))
        {
            if (m is TunerLayer l) { owners.Add((path + ".", l.GroupOf)); tunedPaths.Add((l.Method, path)); }
            else if (m is ModulesToSaveWrapper || trainedInPlace?.Contains(path) == true) { owners.Add((path + ".", _ => "modules_to_save")); tunedPaths.Add(("modules_to_save", path)); }
            else if (m is IAdapterModule a) owners.Add((path + ".", _ => a.Group));
        }
        long total = 0, trainable = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            var n = p.numel();
            total += n;
            if (p.requires_grad) trainable += n;
            var group = "base";
            var owner = owners.FirstOrDefault(x => name.StartsWith(x.Prefix, StringComparison.Ordinal));
            if (owner.Prefix is not null)
            {
                var rest = name[owner.Prefix.Length..];
                group = rest.StartsWith("base_layer.") || rest.StartsWith("original_module.") ? "base" : owner.Group(rest);
            }
            if (group == "base" && p.requires_grad && name.EndsWith("bias")) group = "bias";
            var (t, tr) = groups.GetValueOrDefault(group);
            groups[group] = (t + n, tr + (p.requires_grad ? n : 0));
        }
        var folded = tunedPaths
            .GroupBy(x => (x.Method, Pattern: Regex.Replace(x.Path, @"(?<=^|\.)\d+(?=\.|$)", "*")))
            .Select(g => g.Count() == 1 ? $"{g.Key.Method}: {g.First().Path}" : $"{g.Key.Method}: {g.Key.Pattern} ×{g.Count()}")
            .ToList();
        return new ParameterSummary(total, trainable, groups.ToDictionary(kv => kv.Key, kv => kv.Value), folded);
    }

    static string N(long n) => n.ToString("#,0", CultureInfo.InvariantCulture);

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Total params: {N(Total)}");
        sb.AppendLine($"Trainable params: {N(Trainable)}");
        sb.AppendLine($"Non-trainable params: {N(NonTrainable)}");
        if (Total > 0) sb.AppendLine(string.Create(CultureInfo.InvariantCulture, $"Trainable share: {100.0 * Trainable / Total:0.####}%"));
        foreach (var (g, (t, tr)) in ByGroup) sb.AppendLine($"  {g}: {N(t)} ({N(tr)} trainable)");
        if (TunedModules.Count > 0)
        {
            sb.AppendLine("Tuned modules:");
            foreach (var m in TunedModules) sb.AppendLine("  " + m);
        }
        return sb.ToString();
    }
}
