using Lora.Core.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// The children of one level of an imported graph's module tree, by name, kept in step with the
/// module registry (so state-dict keys read `layer1.0.conv1.weight` and tuners can replace layers).
sealed class ScopeTable(Action<string, nn.Module> register, Action<string, TorchSharp.Modules.Parameter> registerParameter)
{
    public readonly Dictionary<string, nn.Module> Children = new();

    public void Add(string name, nn.Module child) { Children[name] = child; register(name, child); }

    public void AddParameter(string name, TorchSharp.Modules.Parameter p) => registerParameter(name, p);

    public void Replace(string name, nn.Module<Tensor, Tensor>? replacement, bool dryRun)
    {
        if (!Children.TryGetValue(name, out var old)) throw new ArgumentException($"the imported graph has no module '{name}' here");
        if (old is OnnxScope) throw new ArgumentException($"'{name}' is a scope of the imported graph, not a layer: target the layers inside it");
        if (!dryRun) Children[name] = replacement!;
    }

    /// The module at a dotted path below this level.
    public nn.Module Resolve(string path)
    {
        var table = this;
        nn.Module? m = null;
        foreach (var part in path.Split('.'))
        {
            m = table?.Children.GetValueOrDefault(part) ?? throw new InvalidOperationException($"the imported graph has no module '{path}'");
            table = (m as OnnxScope)?.Table;
        }
        return m!;
    }

    /// The level that holds a dotted path's last segment, its scopes created on the way.
    public ScopeTable ParentOf(string path)
    {
        var t = this;
        foreach (var part in path.Split('.')[..^1])
        {
            if (!t.Children.TryGetValue(part, out var next)) { next = new OnnxScope(part); t.Add(part, next); }
            t = ((OnnxScope)next).Table;
        }
        return t;
    }
}

/// A named level of an imported graph's module tree (`layer1`, `layer1.0`).
public sealed class OnnxScope : nn.Module, IReplaceableChildren
{
    internal ScopeTable Table { get; }

    public OnnxScope(string name) : base(name) => Table = new ScopeTable((n, m) => register_module(n, m), (n, p) => register_parameter(n, p));

    public void ReplaceChild(string name, nn.Module<Tensor, Tensor>? replacement, bool dryRun) => Table.Replace(name, replacement, dryRun);

}
