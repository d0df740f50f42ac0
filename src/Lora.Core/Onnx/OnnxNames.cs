using System.Text.RegularExpressions;
using Onnx;

namespace Lora.Core.Onnx;

/// Readable, stable module paths for the layers of an imported graph: the exporter's parameter name
/// where it kept one (torch: `layer1.0.conv1.weight` → `layer1.0.conv1`), else the node's scope
/// (torch ≥ 1.13: `/features/features.0/features.0.0/Conv` → `features.0.0`), else the node name
/// (`Convolution249`), else the op and its index. Paths are unique and never nest in one another.
public static partial class OnnxNames
{
    static readonly string[] Suffixes = [".weight", ".bias", "_weight", "_bias", ".scale"];

    public static string Candidate(NodeProto node, int index, IEnumerable<string?> parameterNames)
    {
        foreach (var p in parameterNames)
            if (p is not null && FromParameter(p) is { } fromParam) return fromParam;
        return FromNode(node) ?? $"{node.OpType.ToLowerInvariant()}_{index}";
    }

    /// `features.3.block.0.weight` → `features.3.block.0`; exporter-made names (`onnx::Conv_12`) → null.
    public static string? FromParameter(string name)
    {
        if (name.Contains("::")) return null;
        foreach (var s in Suffixes)
            if (name.EndsWith(s, StringComparison.Ordinal) && name.Length > s.Length) return Sanitize(name[..^s.Length]);
        return null;
    }

    public static string? FromNode(NodeProto node)
    {
        var segs = node.Name.Split('/', StringSplitOptions.RemoveEmptyEntries).ToList();
        if (segs.Count > 1 && segs[^1].StartsWith(node.OpType, StringComparison.Ordinal)) segs.RemoveAt(segs.Count - 1);
        if (segs.Count == 0) return null;
        // torch writes each scope as its module path (`features.0`, `features.0.0`): a segment that
        // extends the previous one replaces it
        var path = "";
        var last = "";
        foreach (var s in segs)
        {
            path = last.Length > 0 && s.StartsWith(last + ".", StringComparison.Ordinal) ? path[..^last.Length] + s
                : path.Length == 0 ? s : path + "." + s;
            last = s;
        }
        return Sanitize(path);
    }

    /// Each dotted segment as an identifier-like module name.
    public static string Sanitize(string path)
    {
        var parts = path.Split('.', StringSplitOptions.RemoveEmptyEntries).Select(p => Unsafe().Replace(p, "_")).Where(p => p.Length > 0);
        var s = string.Join(".", parts);
        return s.Length == 0 ? "node" : s;
    }

    /// Reserves a unique path: no existing path equals it, lies under it, or sits above it.
    public static string Reserve(string wanted, HashSet<string> taken)
    {
        bool Free(string p) => !taken.Contains(p)
            && !taken.Any(t => t.StartsWith(p + ".", StringComparison.Ordinal) || p.StartsWith(t + ".", StringComparison.Ordinal));
        var path = Free(wanted) ? wanted : null;
        for (var i = 1; path is null; i++)
        {
            var c = $"{wanted}_{i}";
            if (Free(c)) path = c;
            else if (Free(wanted.Replace('.', '_') + (i > 1 ? $"_{i}" : ""))) path = wanted.Replace('.', '_') + (i > 1 ? $"_{i}" : "");
        }
        taken.Add(path);
        return path;
    }

    [GeneratedRegex("[^A-Za-z0-9_]")]
    private static partial Regex Unsafe();
}
