namespace Lora.Core.Onnx;

/// An ONNX file that cannot become a module (unsupported op, dynamic weight, malformed file): the
/// message is one line naming the op, the node and the opset where it applies.
public sealed class OnnxImportException(string message) : Exception(message)
{
    public static OnnxImportException AtNode(global::Onnx.NodeProto node, long opset, string what) =>
        new($"ONNX node '{NodeLabel(node)}' ({node.OpType}, opset {opset}): {what}");

    internal static string NodeLabel(global::Onnx.NodeProto node) =>
        node.Name.Length > 0 ? node.Name : node.Output.Count > 0 ? node.Output[0] : "(unnamed)";
}
