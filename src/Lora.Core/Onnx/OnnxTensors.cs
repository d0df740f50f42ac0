using Google.Protobuf;
using Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// TensorProto ⇄ torch tensors (CPU), for the element types vision graphs use.
public static class OnnxTensors
{
    public static ScalarType ScalarTypeOf(int onnxType, string where) => (TensorProto.Types.DataType)onnxType switch
    {
        TensorProto.Types.DataType.Float => ScalarType.Float32,
        TensorProto.Types.DataType.Double => ScalarType.Float64,
        TensorProto.Types.DataType.Float16 => ScalarType.Float16,
        TensorProto.Types.DataType.Int64 => ScalarType.Int64,
        TensorProto.Types.DataType.Int32 => ScalarType.Int32,
        TensorProto.Types.DataType.Int8 => ScalarType.Int8,
        TensorProto.Types.DataType.Uint8 => ScalarType.Byte,
        TensorProto.Types.DataType.Bool => ScalarType.Bool,
        _ => throw new OnnxImportException($"{where}: ONNX element type {(TensorProto.Types.DataType)onnxType} is not supported"),
    };

    public static int OnnxTypeOf(ScalarType t) => (int)(t switch
    {
        ScalarType.Float32 => TensorProto.Types.DataType.Float,
        ScalarType.Float64 => TensorProto.Types.DataType.Double,
        ScalarType.Float16 => TensorProto.Types.DataType.Float16,
        ScalarType.Int64 => TensorProto.Types.DataType.Int64,
        ScalarType.Int32 => TensorProto.Types.DataType.Int32,
        ScalarType.Int8 => TensorProto.Types.DataType.Int8,
        ScalarType.Byte => TensorProto.Types.DataType.Uint8,
        ScalarType.Bool => TensorProto.Types.DataType.Bool,
        _ => throw new ArgumentException($"element type {t} has no ONNX counterpart here"),
    });

    /// The tensor a TensorProto holds (raw_data or the typed repeated fields), on the CPU.
    public static Tensor ToTorch(TensorProto t, string where)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new OnnxImportException($"{where}: tensor '{t.Name}' keeps its data in an external file, which is not supported (save the model with its weights inside)");
        var type = ScalarTypeOf(t.DataType, where);
        var shape = t.Dims.ToArray();
        var count = shape.Aggregate(1L, (a, b) => a * b);
        if (shape.Any(d => d < 0)) throw new OnnxImportException($"{where}: tensor '{t.Name}' has a negative dimension");
        byte[] bytes;
        if (!t.RawData.IsEmpty) bytes = t.RawData.ToByteArray();
        else bytes = type switch
        {
            ScalarType.Float32 => Bytes(t.FloatData.ToArray()),
            ScalarType.Float64 => Bytes(t.DoubleData.ToArray()),
            ScalarType.Int64 => Bytes(t.Int64Data.ToArray()),
            ScalarType.Int32 => Bytes(t.Int32Data.ToArray()),
            ScalarType.Float16 => Bytes(t.Int32Data.Select(v => (ushort)v).ToArray()),
            ScalarType.Int8 => t.Int32Data.Select(v => (byte)(sbyte)v).ToArray(),
            ScalarType.Byte or ScalarType.Bool => t.Int32Data.Select(v => (byte)v).ToArray(),
            _ => throw new OnnxImportException($"{where}: tensor '{t.Name}' of type {type} has no data"),
        };
        var elementSize = type switch { ScalarType.Float64 or ScalarType.Int64 => 8, ScalarType.Float32 or ScalarType.Int32 => 4, ScalarType.Float16 => 2, _ => 1 };
        if (bytes.LongLength != count * elementSize)
            throw new OnnxImportException($"{where}: tensor '{t.Name}' of shape [{string.Join(", ", shape)}] holds {bytes.LongLength} bytes, expected {count * elementSize}");
        var result = torch.empty(shape, type);
        if (count > 0) result.bytes = bytes;
        return result;
    }

    /// A TensorProto with raw_data (little-endian, as ONNX stores it).
    public static TensorProto FromTorch(Tensor t, string name)
    {
        using var c = t.detach().cpu().contiguous();
        var p = new TensorProto { Name = name, DataType = OnnxTypeOf(c.dtype), RawData = ByteString.CopyFrom(c.bytes) };
        p.Dims.AddRange(c.shape);
        return p;
    }

    static byte[] Bytes<T>(T[] values) where T : unmanaged
    {
        var span = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan());
        return span.ToArray();
    }
}
