using Google.Protobuf;
using Lora.Core.IO;
using Lora.Core.Tuning;
using Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// Writes an imported model back as ONNX: its own graph, each layer's current weights as fresh
/// initializers (a merged model's, after merge-and-unload), its new head, and fixed-size pooling
/// that became global as GlobalAveragePool. The file is written atomically; the model and the
/// source graph are not changed.
public static class OnnxExport
{
    public static void Write(OnnxModule model, string path)
    {
        var bytes = ToBytes(model);
        AtomicFile.WriteAllBytes(path, bytes);
    }

    public static byte[] ToBytes(OnnxModule model)
    {
        var tuned = model.Layers.Select(l => (l.Path, m: model.ModuleAt(l.Path))).FirstOrDefault(x => x.m is TunerLayer or ModulesToSaveWrapper);
        if (tuned.m is not null)
            throw new InvalidOperationException($"'{tuned.Path}' is still a {tuned.m.GetType().Name}: merge the adapter first (merge-and-unload); methods that cannot merge (bottleneck adapters) cannot be exported");
        if (ModuleTree.Descendants(model).FirstOrDefault(d => d.Module is BottleneckAdapter).Module is { } adapter)
            throw new InvalidOperationException("the model carries bottleneck adapters, which cannot be merged into the graph's weights: ONNX export supports mergeable methods (LoRA, DoRA, AdaLoRA)");

        var proto = model.Graph.Model.Clone();
        // IR < 4 wants every initializer listed as a graph input; the new ones are not
        proto.IrVersion = Math.Max(proto.IrVersion, 4);
        var g = proto.Graph;
        var names = new HashSet<string>(g.Initializer.Select(i => i.Name).Concat(g.Node.SelectMany(n => n.Output)).Concat(g.Input.Select(i => i.Name)));
        var fresh = new List<TensorProto>();
        string Add(string wanted, Tensor value)
        {
            var name = wanted;
            for (var i = 1; names.Contains(name); i++) name = $"{wanted}_{i}";
            names.Add(name);
            using var f = value.detach().to(ScalarType.Float32);
            fresh.Add(OnnxTensors.FromTorch(f, name));
            return name;
        }

        foreach (var layer in model.Layers)
        {
            var module = model.ModuleAt(layer.Path);
            if (layer.Kind == OnnxLayerKind.AppendedHead) AppendHead(g, (TorchSharp.Modules.Linear)module, layer.Path, Add, names);
            else layer.WriteBack(g, module, Add);
        }
        foreach (var i in model.GlobalPools)
        {
            g.Node[i].OpType = "GlobalAveragePool";
            g.Node[i].Attribute.Clear();
        }
        // parameters of interpreted nodes (ViT's class token, position embedding): their current values
        foreach (var (value, paramPath) in model.ParameterPaths)
        {
            var p = model.named_parameters().First(x => x.name == paramPath).parameter;
            var name = Add(paramPath, p);
            foreach (var n in g.Node) for (var k = 0; k < n.Input.Count; k++) if (n.Input[k] == value) n.Input[k] = name;
        }
        // preprocessing carried by the model becomes the graph's first nodes (last: layers address nodes by index)
        if (model.Preprocessing is { } pre) Prepend(g, model, pre, Add);
        g.Initializer.AddRange(fresh);
        if (model.ReplacedHead is not null || model.Layers.Any(l => l.Kind == OnnxLayerKind.AppendedHead)) SetClassCount(g, model);
        Prune(g);
        return proto.ToByteArray();
    }

    static void Prepend(GraphProto g, OnnxModule model, PixelPreprocessing pre, Func<string, Tensor, string> add)
    {
        var input = model.Graph.Input;
        var scaled = add("preprocess.scale", torch.tensor(pre.Scale));
        var nodes = new List<NodeProto>();
        var current = input;
        string Next(string op, string[] inputs, params (string, long[])[] attrs)
        {
            var output = $"preprocess/{op}_{nodes.Count}";
            var n = new NodeProto { OpType = op, Name = output };
            n.Input.AddRange(inputs); n.Output.Add(output);
            foreach (var (k, v) in attrs)
                n.Attribute.Add(v.Length == 1 && k != "split"
                    ? new AttributeProto { Name = k, Type = AttributeProto.Types.AttributeType.Int, I = v[0] }
                    : new AttributeProto { Name = k, Type = AttributeProto.Types.AttributeType.Ints, Ints = { v } });
            nodes.Add(n);
            return output;
        }
        current = Next("Mul", [current, scaled]);
        if (pre.ReverseChannels)
        {
            var split = new NodeProto { OpType = "Split", Name = "preprocess/Split" };
            split.Input.Add(current);
            split.Output.AddRange(["preprocess/R", "preprocess/G", "preprocess/B"]);
            split.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
            nodes.Add(split);
            current = Next("Concat", ["preprocess/B", "preprocess/G", "preprocess/R"], ("axis", [1]));
        }
        // the mean image at its own size, which is what the graph's declared input has
        current = Next("Sub", [current, add("preprocess.mean_image", pre.MeanImage)]);
        foreach (var n in g.Node) for (var k = 0; k < n.Input.Count; k++) if (n.Input[k] == input) n.Input[k] = current;
        for (var i = nodes.Count - 1; i >= 0; i--) g.Node.Insert(0, nodes[i]);
    }

    static void AppendHead(GraphProto g, TorchSharp.Modules.Linear head, string path, Func<string, Tensor, string> add, HashSet<string> names)
    {
        var features = g.Output[0].Name;
        string Out(string what) { var n = $"{path}/{what}"; names.Add(n); return n; }
        var pool = new NodeProto { OpType = "GlobalAveragePool", Name = Out("GlobalAveragePool") };
        pool.Input.Add(features); pool.Output.Add(pool.Name);
        var flat = new NodeProto { OpType = "Flatten", Name = Out("Flatten") };
        flat.Input.Add(pool.Name); flat.Output.Add(flat.Name);
        flat.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        var gemm = new NodeProto { OpType = "Gemm", Name = Out("Gemm") };
        gemm.Input.AddRange([flat.Name, add(path + ".weight", head.weight!), add(path + ".bias", head.bias!)]);
        gemm.Output.Add("logits");
        gemm.Attribute.Add(new AttributeProto { Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        g.Node.AddRange([pool, flat, gemm]);
        g.Output[0].Name = "logits";
    }

    /// The output's declared shape: [batch, classes].
    static void SetClassCount(GraphProto g, OnnxModule model)
    {
        var head = model.ModuleAt(model.Classifier) as TorchSharp.Modules.Linear;
        var t = g.Output[0].Type?.TensorType;
        if (head is null || t is null) return;
        var batch = t.Shape?.Dim.FirstOrDefault()?.Clone() ?? new TensorShapeProto.Types.Dimension { DimParam = "batch" };
        t.Shape = new TensorShapeProto();
        t.Shape.Dim.Add(batch);
        t.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = head.out_features });
    }

    /// Drops nodes whose outputs nothing uses, then initializers (and their old-style graph inputs) nothing reads.
    static void Prune(GraphProto g)
    {
        bool changed;
        do
        {
            var used = new HashSet<string>(g.Node.SelectMany(n => n.Input).Concat(g.Output.Select(o => o.Name)));
            changed = false;
            for (var i = g.Node.Count - 1; i >= 0; i--)
                if (g.Node[i].Output.All(o => o.Length == 0 || !used.Contains(o))) { g.Node.RemoveAt(i); changed = true; }
        } while (changed);
        var read = new HashSet<string>(g.Node.SelectMany(n => n.Input));
        var dropped = g.Initializer.Where(t => !read.Contains(t.Name)).Select(t => t.Name).ToHashSet();
        foreach (var t in g.Initializer.Where(t => dropped.Contains(t.Name)).ToList()) g.Initializer.Remove(t);
        foreach (var i in g.Input.Where(i => dropped.Contains(i.Name)).ToList()) g.Input.Remove(i);
        foreach (var v in g.ValueInfo.Where(v => !read.Contains(v.Name)).ToList()) g.ValueInfo.Remove(v);
    }
}
