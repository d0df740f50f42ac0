using Onnx;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Lora.Core.Onnx;

/// What a weighted node becomes: Conv → Conv2d, Gemm or MatMul with a constant weight → Linear
/// (a following Add of a constant vector is its bias), BatchNormalization → BatchNorm2d,
/// LayerNormalization → LayerNorm.
public enum OnnxLayerKind { Conv, Gemm, MatMul, BatchNorm, LayerNorm, AppendedHead }

/// One weighted node of an imported graph and the module path that holds its weights.
public sealed class OnnxLayer
{
    public required int Node { get; init; }
    public required OnnxLayerKind Kind { get; init; }
    public required string Path { get; set; }
    /// The Add node folded into a MatMul as its bias (its output is the layer's output).
    public int? BiasAdd { get; init; }
    public int BiasAddConstInput { get; init; }
    /// Conv padding torch cannot express in Conv2d (ONNX [top, left, bottom, right] asymmetric), in F.pad order.
    public long[]? PrePad { get; init; }
    public bool TransA { get; init; }
    public long Axis { get; init; } = -1;

    public Tensor Forward(nn.Module<Tensor, Tensor> module, Tensor x)
    {
        switch (Kind)
        {
            case OnnxLayerKind.Conv:
                if (PrePad is null) return module.forward(x);
                using (var padded = F.pad(x, PrePad)) return module.forward(padded);
            case OnnxLayerKind.Gemm:
                if (!TransA) return module.forward(x);
                using (var t = x.t()) return module.forward(t);
            case OnnxLayerKind.BatchNorm:
                if (x.dim() == 4) return module.forward(x);
                // BatchNorm2d on [N, C] or [N, C, L]: add the missing spatial dimensions
                var shape = x.shape;
                using (var v = x.reshape(shape[0], shape[1], -1, 1)) using (var y = module.forward(v)) return y.reshape(shape);
            case OnnxLayerKind.AppendedHead:
                using (var pooled = x.dim() > 2 ? x.mean(Enumerable.Range(2, (int)x.dim() - 2).Select(i => (long)i).ToArray()) : x.alias())
                    return module.forward(pooled);
            default:
                return module.forward(x);
        }
    }

    /// The layer for a node, or null when the node is not weighted here (it is interpreted).
    /// constant: an input's value when it is known at import time.
    public static (OnnxLayer Layer, nn.Module<Tensor, Tensor> Module)? Create(
        OnnxGraph g, int index, Func<string?, Tensor?> constant, Func<string, IReadOnlyList<int>> consumers, HashSet<string> taken)
    {
        var n = g.Graph.Node[index];
        OnnxImportException Bad(string what) => OnnxImportException.AtNode(n, g.Opset, what);
        Tensor Need(int i, string what) => constant(n.In(i)) ?? throw Bad($"its {what} ('{n.In(i)}') is computed by the graph, not a stored weight; a dynamic weight is not supported");
        string Name(params string?[] parameterNames) => OnnxNames.Reserve(OnnxNames.Candidate(n, index, parameterNames), taken);

        switch (n.OpType)
        {
            case "Conv":
            {
                var w = Need(1, "weight");
                if (w.dim() != 4) throw Bad($"only 2-D convolutions are supported (the weight has rank {w.dim()})");
                var b = n.In(2) is null ? null : Need(2, "bias");
                if (n.Str("auto_pad", "NOTSET") is not ("NOTSET" or "VALID")) throw Bad($"auto_pad {n.Str("auto_pad", "")} is not supported (export with explicit pads)");
                var groups = n.Int("group", 1);
                var strides = n.Ints("strides") ?? [1, 1];
                var dil = n.Ints("dilations") ?? [1, 1];
                var pads = n.Ints("pads") ?? [0, 0, 0, 0];
                var symmetric = pads[0] == pads[2] && pads[1] == pads[3];
                var conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], (w.shape[2], w.shape[3]), stride: (strides[0], strides[1]),
                    padding: symmetric ? (pads[0], pads[1]) : (0, 0), dilation: (dil[0], dil[1]), groups: groups, bias: b is not null);
                Copy(conv.weight!, w); if (b is not null) Copy(conv.bias!, b);
                return (new OnnxLayer { Node = index, Kind = OnnxLayerKind.Conv, Path = Name(n.In(1), n.In(2)), PrePad = symmetric ? null : [pads[1], pads[3], pads[0], pads[2]] }, conv);
            }
            case "Gemm":
            {
                if (constant(n.In(1)) is not { } bw || bw.dim() != 2 || constant(n.In(0)) is not null) return null;
                var transB = n.Int("transB", 0) == 1;
                var w = transB ? bw : bw.t();
                var alpha = n.Float("alpha", 1f);
                var c = n.In(2) is null ? null : Need(2, "bias C");
                var outF = w.shape[0];
                if (c is not null && c.numel() != outF && c.numel() != 1) throw Bad($"a bias C of shape [{string.Join(", ", c.shape)}] is not supported (expected [{outF}])");
                var linear = nn.Linear(w.shape[1], outF, hasBias: c is not null);
                using (var scaled = w * alpha) Copy(linear.weight!, scaled);
                if (c is not null) using (var cb = (c * n.Float("beta", 1f)).reshape(-1).expand(outF)) Copy(linear.bias!, cb);
                return (new OnnxLayer { Node = index, Kind = OnnxLayerKind.Gemm, Path = Name(n.In(1), n.In(2)), TransA = n.Int("transA", 0) == 1 }, linear);
            }
            case "MatMul":
            {
                if (constant(n.In(1)) is not { } bw || bw.dim() != 2 || constant(n.In(0)) is not null) return null;
                var outF = bw.shape[1];
                // x @ W + b: the Add that only this MatMul feeds, with a constant [N] vector, is the bias
                int? add = null; var constInput = 1; Tensor? bias = null;
                var users = consumers(n.Output[0]);
                if (users.Count == 1 && n.Output[0] != g.Output && g.Graph.Node[users[0]] is { OpType: "Add" } a)
                {
                    var other = a.Input[0] == n.Output[0] ? 1 : 0;
                    if (constant(a.In(other)) is { } v && v.dim() == 1 && v.shape[0] == outF) { add = users[0]; constInput = other; bias = v; }
                }
                var linear = nn.Linear(bw.shape[0], outF, hasBias: bias is not null);
                using (var t = bw.t()) Copy(linear.weight!, t);
                if (bias is not null) Copy(linear.bias!, bias);
                var biasName = add is { } ai ? g.Graph.Node[ai].In(constInput) : null;
                return (new OnnxLayer { Node = index, Kind = OnnxLayerKind.MatMul, Path = Name(n.In(1), biasName), BiasAdd = add, BiasAddConstInput = constInput }, linear);
            }
            case "BatchNormalization":
            {
                if (n.Output.Skip(1).Any(o => o.Length > 0 && consumers(o).Count > 0)) throw Bad("the training outputs (running mean and variance) are used by the graph, which is not supported");
                var scale = Need(1, "scale"); var bias = Need(2, "bias"); var mean = Need(3, "mean"); var variance = Need(4, "variance");
                // ONNX: running = running * momentum + batch * (1 - momentum); torch's momentum is the other weight
                var bn = nn.BatchNorm2d(scale.shape[0], eps: n.Float("epsilon", 1e-5f), momentum: 1 - n.Float("momentum", 0.9f));
                Copy(bn.weight!, scale); Copy(bn.bias!, bias); Copy(bn.running_mean!, mean); Copy(bn.running_var!, variance);
                return (new OnnxLayer { Node = index, Kind = OnnxLayerKind.BatchNorm, Path = Name(n.In(1), n.In(2), n.In(3)) }, bn);
            }
            case "LayerNormalization":
            {
                if (n.Output.Skip(1).Any(o => o.Length > 0 && consumers(o).Count > 0)) throw Bad("the Mean and InvStdDev outputs are used by the graph, which is not supported");
                var scale = Need(1, "scale");
                var bias = n.In(2) is null ? null : Need(2, "bias");
                var ln = nn.LayerNorm(scale.shape, n.Float("epsilon", 1e-5f));
                Copy(ln.weight!, scale);
                if (bias is not null) Copy(ln.bias!, bias); else using (torch.no_grad()) ln.bias!.zero_();
                return (new OnnxLayer { Node = index, Kind = OnnxLayerKind.LayerNorm, Path = Name(n.In(1), n.In(2)), Axis = n.Int("axis", -1) }, ln);
            }
            default: return null;
        }
    }

    static void Copy(Tensor target, Tensor source)
    {
        using var _ = torch.no_grad();
        using var s = source.to(target.dtype).reshape(target.shape);
        target.copy_(s);
    }

    /// The output a layer writes (the folded Add's for a MatMul with bias).
    public string OutputName(GraphProto g) => BiasAdd is { } a ? g.Node[a].Output[0] : Kind == OnnxLayerKind.AppendedHead ? "" : g.Node[Node].Output[0];

    /// Writes the module's current weights back into the node (export), with fresh initializers.
    internal void WriteBack(GraphProto g, nn.Module module, Func<string, Tensor, string> addInitializer)
    {
        var n = g.Node[Node];
        void SetInput(NodeProto node, int i, string name)
        {
            while (node.Input.Count <= i) node.Input.Add("");
            node.Input[i] = name;
        }
        switch (Kind)
        {
            case OnnxLayerKind.Conv:
            {
                var c = (Conv2d)module;
                SetInput(n, 1, addInitializer(Path + ".weight", c.weight!));
                if (c.bias is { } b) SetInput(n, 2, addInitializer(Path + ".bias", b));
                break;
            }
            case OnnxLayerKind.Gemm:
            {
                var l = (Linear)module;
                SetInput(n, 1, addInitializer(Path + ".weight", l.weight!));
                if (l.bias is { } b) SetInput(n, 2, addInitializer(Path + ".bias", b));
                else while (n.Input.Count > 2) n.Input.RemoveAt(2);
                foreach (var attr in new[] { "alpha", "beta", "transB" }) if (n.Find(attr) is { } a) n.Attribute.Remove(a);
                n.Attribute.Add(new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
                break;
            }
            case OnnxLayerKind.MatMul:
            {
                var l = (Linear)module;
                using (var wt = l.weight!.t()) SetInput(n, 1, addInitializer(Path + ".weight", wt));
                if (l.bias is { } b)
                {
                    if (BiasAdd is { } ai) SetInput(g.Node[ai], BiasAddConstInput, addInitializer(Path + ".bias", b));
                    else throw new InvalidOperationException($"'{Path}' gained a bias the graph has no Add for");
                }
                break;
            }
            case OnnxLayerKind.BatchNorm:
            {
                var bn = (BatchNorm2d)module;
                SetInput(n, 1, addInitializer(Path + ".weight", bn.weight!));
                SetInput(n, 2, addInitializer(Path + ".bias", bn.bias!));
                SetInput(n, 3, addInitializer(Path + ".running_mean", bn.running_mean!));
                SetInput(n, 4, addInitializer(Path + ".running_var", bn.running_var!));
                break;
            }
            case OnnxLayerKind.LayerNorm:
            {
                var ln = (LayerNorm)module;
                SetInput(n, 1, addInitializer(Path + ".weight", ln.weight!));
                SetInput(n, 2, addInitializer(Path + ".bias", ln.bias!));
                break;
            }
        }
    }
}
