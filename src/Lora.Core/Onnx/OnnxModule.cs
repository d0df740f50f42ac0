using Lora.Core.Models;
using Lora.Core.Tuning;
using Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// How to import a graph. NumClasses: a new head (replaces the final Gemm/MatMul classifier, or is
/// appended as global average pooling + Linear to a featurizer); null keeps the graph's own output.
/// Rename: module paths to use instead of the derived ones (e.g. torchvision's for a CNTK ResNet).
public sealed record OnnxImportOptions(long? NumClasses = null, IReadOnlyDictionary<string, string>? Rename = null, PixelPreprocessing? Preprocessing = null);

/// An ONNX graph as a TorchSharp module. Weighted nodes are ordinary nn modules (Conv2d, Linear,
/// BatchNorm2d, LayerNorm) under readable paths, so tuners inject into them with the usual target
/// patterns; every other node is interpreted in graph order (<see cref="OnnxOps"/>). Float
/// initializers that interpreted nodes read (ViT's class token and position embedding) are
/// parameters; values computable at import time are folded once.
public sealed class OnnxModule : nn.Module<Tensor, Tensor>, IReplaceableChildren, IHasClassifier, IOwnsPreprocessing
{
    readonly PixelPreprocessing? pre;
    readonly ScopeTable table;
    readonly OnnxGraph graph;
    /// Per node: its layer, or null (interpreted), and whether it was folded at import time.
    readonly OnnxLayer?[] layers;
    readonly bool[] folded;
    readonly bool[] globalPool;
    /// Values known at import time that stay constant: small integer tensors on the CPU ...
    readonly Dictionary<string, Tensor> constants = new();
    /// ... and float ones, as non-persistent buffers (they move with the module), by value name.
    readonly Dictionary<string, string> bufferNames = new();
    /// Float initializers that interpreted nodes read, as parameters (value name → parameter path).
    readonly Dictionary<string, string> parameterNames = new();
    readonly string output;
    readonly string? classifier;

    public OnnxGraph Graph => graph;
    public IReadOnlyList<OnnxLayer> Layers => layers.Where(l => l is not null).Select(l => l!).Concat(head is null ? [] : [head]).ToList();
    /// The head appended to a featurizer graph (null when the graph's own classifier is kept or replaced).
    readonly OnnxLayer? head;
    /// Paths of the replaced classifier, when num_classes changed it.
    public string? ReplacedHead { get; }
    /// AveragePool nodes that became global pooling.
    public IReadOnlyList<int> GlobalPools => Enumerable.Range(0, globalPool.Length).Where(i => globalPool[i]).ToList();

    public string Classifier => classifier ?? throw new ArgumentException("this imported ONNX graph has no classifier (it ends in features): give num_classes to append one");

    public OnnxModule(OnnxGraph graph, OnnxImportOptions? options = null) : base("OnnxModule")
    {
        options ??= new();
        this.graph = graph;
        table = new ScopeTable((n, m) => register_module(n, m), (n, p) => register_parameter(n, p));
        var nodes = graph.Graph.Node;
        layers = new OnnxLayer?[nodes.Count];
        folded = new bool[nodes.Count];
        globalPool = new bool[nodes.Count];
        output = graph.Output;
        pre = options.Preprocessing;
        if (pre is not null)
        {
            register_buffer("mean_image", pre.MeanImage.clone(), persistent: false);
            register_buffer("mean_pixel", pre.MeanImage.mean([0L, 2L, 3L], keepdim: true), persistent: false);
        }

        var consumers = new Dictionary<string, List<int>>();
        for (var i = 0; i < nodes.Count; i++)
            foreach (var input in nodes[i].Input) if (input.Length > 0) (consumers.TryGetValue(input, out var l) ? l : consumers[input] = []).Add(i);
        IReadOnlyList<int> Consumers(string v) => consumers.TryGetValue(v, out var l) ? l : [];

        var known = new Dictionary<string, Tensor>();
        foreach (var (name, t) in graph.Initializers) known[name] = OnnxTensors.ToTorch(t, $"{graph.Source} initializer '{name}'");
        Tensor? Constant(string? v) => v is not null && known.TryGetValue(v, out var t) ? t : null;

        var taken = new HashSet<string>();
        var absorbed = new HashSet<int>();
        var modules = new List<(OnnxLayer, nn.Module<Tensor, Tensor>)>();
        for (var i = 0; i < nodes.Count; i++)
        {
            var n = nodes[i];
            if (absorbed.Contains(i)) continue;
            if (!OnnxOps.Supported.Contains(n.OpType) && n.OpType is not ("Conv" or "BatchNormalization" or "LayerNormalization"))
                throw OnnxImportException.AtNode(n, graph.Opset, "this operator is not supported");
            if (OnnxLayer.Create(graph, i, Constant, Consumers, taken) is { } made)
            {
                layers[i] = made.Layer;
                if (made.Layer.BiasAdd is { } a) absorbed.Add(a);
                modules.Add(made);
                continue;
            }
            // all inputs known: compute once now (Constant, Identity of a weight, shape arithmetic on constants)
            if (n.Input.All(x => x.Length == 0 || known.ContainsKey(x)))
            {
                var outs = Run(n, n.Input.Select(x => x.Length == 0 ? null : known[x]).ToArray());
                for (var o = 0; o < n.Output.Count && o < outs.Length; o++) known[n.Output[o]] = outs[o];
                folded[i] = true;
            }
        }
        for (var i = 0; i < nodes.Count; i++)
            if (absorbed.Contains(i)) folded[i] = true;

        // A fixed-size AveragePool after the last convolution (ML.NET's 7×7) would refuse other input
        // sizes: with no padding it is global pooling at the size it was made for, so it becomes that.
        var lastSpatial = Enumerable.Range(0, nodes.Count).LastOrDefault(i => nodes[i].OpType is "Conv" or "MaxPool" or "BatchNormalization", -1);
        for (var i = lastSpatial + 1; i < nodes.Count; i++)
            if (nodes[i].OpType == "AveragePool" && (nodes[i].Ints("pads") ?? [0]).All(p => p == 0)) globalPool[i] = true;

        // Rename before registering: the names users target
        if (options.Rename is { } rename)
        {
            var renamed = new HashSet<string>();
            foreach (var (l, _) in modules)
                l.Path = OnnxNames.Reserve(rename.TryGetValue(l.Path, out var r) ? r : l.Path, renamed);
        }

        // The classifier: the Gemm/MatMul layer that writes the graph's output.
        var last = modules.Select(m => m.Item1).LastOrDefault(l => l.Kind is OnnxLayerKind.Gemm or OnnxLayerKind.MatMul && l.OutputName(graph.Graph) == output);
        if (last is not null && options.NumClasses is { } k)
        {
            var idx = modules.FindIndex(m => m.Item1 == last);
            var old = (TorchSharp.Modules.Linear)modules[idx].Item2;
            if (old.out_features != k)
            {
                modules[idx] = (last, nn.Linear(old.in_features, k, hasBias: true));
                if (last.Kind == OnnxLayerKind.MatMul && last.BiasAdd is null)
                    throw new OnnxImportException($"{graph.Source}: the classifier '{last.Path}' is a MatMul without a bias Add; a new head needs one");
                old.Dispose();
                ReplacedHead = last.Path;
            }
        }
        foreach (var (l, m) in modules) table.ParentOf(l.Path).Add(l.Path.Split('.')[^1], m);
        classifier = last?.Path;
        if (last is null && options.NumClasses is { } classes)
        {
            var features = FeatureCount(modules.Select(m => m.Item2).LastOrDefault())
                ?? throw new OnnxImportException($"{graph.Source}: cannot tell how many features the graph's output has, so no head can be appended");
            var name = OnnxNames.Reserve(taken.Contains("fc") || modules.Any(m => m.Item1.Path == "fc") ? "head" : "fc", [.. modules.Select(m => m.Item1.Path)]);
            head = new OnnxLayer { Node = -1, Kind = OnnxLayerKind.AppendedHead, Path = name };
            table.ParentOf(name).Add(name.Split('.')[^1], nn.Linear(features, classes));
            classifier = name;
        }

        // What interpreted nodes read at run time: parameterNames (float initializers), bufferNames (folded floats), CPU constants
        var paramTaken = new HashSet<string>(modules.Select(m => m.Item1.Path));
        var constIndex = 0;
        for (var i = 0; i < nodes.Count; i++)
        {
            if (folded[i] || layers[i] is not null) continue;
            foreach (var v in nodes[i].Input)
            {
                if (v.Length == 0 || !known.TryGetValue(v, out var t) || parameterNames.ContainsKey(v) || bufferNames.ContainsKey(v) || constants.ContainsKey(v)) continue;
                if (!t.is_floating_point()) { constants[v] = t; continue; }
                if (graph.Initializers.ContainsKey(v))
                {
                    var path = OnnxNames.Reserve(OnnxNames.Sanitize(v), paramTaken);
                    table.ParentOf(path).AddParameter(path.Split('.')[^1], new TorchSharp.Modules.Parameter(t.clone()));
                    parameterNames[v] = path;
                }
                else
                {
                    var name = $"onnx_const_{constIndex++}";
                    register_buffer(name, t.clone(), persistent: false);
                    bufferNames[v] = name;
                }
            }
        }
        foreach (var (v, t) in known) if (!constants.ContainsKey(v)) t.Dispose();
    }

    static long? FeatureCount(nn.Module? m) => m switch
    {
        TorchSharp.Modules.Conv2d c => c.out_channels,
        TorchSharp.Modules.BatchNorm2d b => b.num_features,
        TorchSharp.Modules.Linear l => l.out_features,
        _ => null,
    };

    public void ReplaceChild(string name, nn.Module<Tensor, Tensor>? replacement, bool dryRun) => table.Replace(name, replacement, dryRun);

    /// The module now at a layer's path (a tuning layer after injection).
    public nn.Module<Tensor, Tensor> ModuleAt(string path) => (nn.Module<Tensor, Tensor>)table.Resolve(path);

    Tensor[] Run(NodeProto n, Tensor?[] inputs)
    {
        try { return OnnxOps.Run(n, inputs, graph.Opset); }
        catch (OnnxImportException) { throw; }
        catch (Exception e) { throw OnnxImportException.AtNode(n, graph.Opset, FirstLine(e.Message)); }
    }

    static string FirstLine(string message) => message.Split('\n')[0].Trim();

    /// Float initializers of interpreted nodes and the parameter paths that hold them.
    public IReadOnlyDictionary<string, string> ParameterPaths => parameterNames;

    /// The model's own preprocessing, when it has some (<see cref="IOwnsPreprocessing"/>).
    public PixelPreprocessing? Preprocessing => pre;

    Tensor Preprocess(Tensor x)
    {
        var mean = get_buffer("mean_image")!;
        if (x.shape[1] == 1 && mean.shape[1] == 3) x = x.expand(-1, 3, -1, -1);
        using var scale = torch.tensor(pre!.Scale, x.dtype, x.device);
        var y = x * scale;
        if (pre.ReverseChannels) y = y.flip(1);
        var fits = x.shape[2] == mean.shape[2] && x.shape[3] == mean.shape[3];
        return y - (fits ? mean : get_buffer("mean_pixel")!).to(y.dtype);
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        var nodes = graph.Graph.Node;
        var values = new Dictionary<string, Tensor> { [graph.Input] = pre is null ? input : Preprocess(input) };
        var named = named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        foreach (var b in bufferNames.Values) named[b] = get_buffer(b)!;
        Tensor? Value(string v) =>
            v.Length == 0 ? null
            : values.TryGetValue(v, out var t) ? t
            : constants.TryGetValue(v, out t) ? t
            : parameterNames.TryGetValue(v, out var p) ? named[p]
            : bufferNames.TryGetValue(v, out var b) ? named[b]
            : throw new OnnxImportException($"{graph.Source}: value '{v}' is used before any node computes it (the graph is not in topological order)");

        for (var i = 0; i < nodes.Count; i++)
        {
            if (folded[i]) continue;
            var n = nodes[i];
            if (layers[i] is { } layer)
            {
                Tensor y;
                try { y = layer.Forward(ModuleAt(layer.Path), Value(n.Input[0])!); }
                catch (OnnxImportException) { throw; }
                catch (Exception e) when (e is not OutOfMemoryException) { throw OnnxImportException.AtNode(n, graph.Opset, $"layer '{layer.Path}': {FirstLine(e.Message)}"); }
                values[layer.OutputName(graph.Graph)] = y;
                continue;
            }
            var inputs = n.Input.Select(Value).ToArray();
            var outs = globalPool[i] ? Run(new NodeProto { OpType = "GlobalAveragePool", Name = n.Name }, inputs) : Run(n, inputs);
            for (var o = 0; o < n.Output.Count && o < outs.Length; o++) if (n.Output[o].Length > 0) values[n.Output[o]] = outs[o];
        }
        var result = Value(output)!;
        if (head is not null) result = head.Forward(ModuleAt(head.Path), result);
        return scope.MoveToOuter(ReferenceEquals(result, input) ? input.alias() : result);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) foreach (var t in constants.Values) t.Dispose();
        base.Dispose(disposing);
    }
}
