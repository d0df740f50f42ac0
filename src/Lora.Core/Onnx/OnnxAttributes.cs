using Onnx;

namespace Lora.Core.Onnx;

/// Reading a node's attributes with ONNX's defaults.
static class OnnxAttributes
{
    public static AttributeProto? Find(this NodeProto node, string name) =>
        node.Attribute.FirstOrDefault(a => a.Name == name);

    public static long Int(this NodeProto node, string name, long fallback) =>
        node.Find(name) is { } a ? a.I : fallback;

    public static float Float(this NodeProto node, string name, float fallback) =>
        node.Find(name) is { } a ? a.F : fallback;

    public static string Str(this NodeProto node, string name, string fallback) =>
        node.Find(name) is { } a ? a.S.ToStringUtf8() : fallback;

    public static long[]? Ints(this NodeProto node, string name) =>
        node.Find(name) is { } a ? a.Ints.ToArray() : null;

    public static float[]? Floats(this NodeProto node, string name) =>
        node.Find(name) is { } a ? a.Floats.ToArray() : null;

    /// The i-th input's name, or null when absent (ONNX marks an omitted optional input by "").
    public static string? In(this NodeProto node, int i) =>
        i < node.Input.Count && node.Input[i].Length > 0 ? node.Input[i] : null;
}
