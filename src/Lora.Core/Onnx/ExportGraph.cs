using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// Builds one ONNX graph (OnnxSharp's generated protobuf types): float32 initializers named by
/// their state-dict keys, nodes with generated value names, one input and one output.
internal sealed class ExportGraph
{
    public const int Opset = 17;
    // IR version 8 is the one that goes with opset 17 (ONNX's versioning table).
    const long IrVersion = 8;
    // protobuf messages cannot exceed 2 GiB; larger models would need external data files.
    const long MaxBytes = int.MaxValue - (64L << 20);

    readonly GraphProto graph = new() { Name = "lora" };
    readonly HashSet<string> initializers = new();
    long bytes;
    int counter;

    /// A float32 initializer holding t (any dtype or device) under name; returns the name.
    public string Weight(string name, Tensor t)
    {
        if (!initializers.Add(name)) return name;
        using var c = t.detach().to(ScalarType.Float32, CPU).contiguous();
        var data = c.data<float>().ToArray();
        bytes += 4L * data.Length;
        if (bytes > MaxBytes)
            throw new NotSupportedException($"the model's weights exceed the 2 GiB an ONNX file without external data can hold (at '{name}')");
        var tp = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(data.AsSpan())) };
        tp.Dims.AddRange(c.shape);
        graph.Initializer.Add(tp);
        return name;
    }

    /// A float32 constant (a scalar when shape is empty), shared by name.
    public string Constant(string name, float value)
    {
        using var t = tensor(value);
        return Weight("const.f32." + name, t);
    }

    /// An int64 constant vector (shapes, axes, indices), shared by name.
    public string Longs(string name, params long[] values)
    {
        var full = "const.i64." + name;
        if (!initializers.Add(full)) return full;
        var tp = new TensorProto { Name = full, DataType = (int)TensorProto.Types.DataType.Int64 };
        tp.Dims.Add(values.Length);
        tp.Int64Data.AddRange(values);
        graph.Initializer.Add(tp);
        return full;
    }

    /// An int64 scalar constant (Gather's index that drops the axis).
    public string LongScalar(string name, long value)
    {
        var full = "const.i64." + name;
        if (!initializers.Add(full)) return full;
        var tp = new TensorProto { Name = full, DataType = (int)TensorProto.Types.DataType.Int64 };
        tp.Int64Data.Add(value);
        graph.Initializer.Add(tp);
        return full;
    }

    /// Adds a node; returns its output's name (path/op_N, readable in Netron and error messages).
    public string Node(string op, string path, IEnumerable<string> inputs, params (string Name, object Value)[] attributes)
    {
        var output = $"{(path.Length == 0 ? "" : path + "/")}{op}_{counter++}";
        var node = new NodeProto { OpType = op, Name = output };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        foreach (var (name, value) in attributes) node.Attribute.Add(Attribute(name, value));
        graph.Node.Add(node);
        return output;
    }

    static AttributeProto Attribute(string name, object value)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case long i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case int i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case float f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f; break;
            case double d: a.Type = AttributeProto.Types.AttributeType.Float; a.F = (float)d; break;
            case long[] ints: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ints); break;
            default: throw new ArgumentException($"attribute {name}: unsupported value type {value.GetType().Name}");
        }
        return a;
    }

    /// A float tensor value with its shape; a null dimension is the symbolic batch size "N".
    static ValueInfoProto Value(string name, IEnumerable<long?> shape)
    {
        var s = new TensorShapeProto();
        foreach (var d in shape)
            s.Dim.Add(d is { } v ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = "N" });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = s } },
        };
    }

    public void Input(string name, IEnumerable<long?> shape) => graph.Input.Add(Value(name, shape));

    /// Names the graph's output: an Identity from the last value, so the output is called `name`.
    public void Output(string value, string name, IEnumerable<long?> shape)
    {
        var node = new NodeProto { OpType = "Identity", Name = name };
        node.Input.Add(value);
        node.Output.Add(name);
        graph.Node.Add(node);
        graph.Output.Add(Value(name, shape));
    }

    public ModelProto Model(string docString)
    {
        var m = new ModelProto { IrVersion = IrVersion, ProducerName = "Lora", Graph = graph, DocString = docString };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        return m;
    }
}
