using Google.Protobuf;
using Onnx;

namespace Lora.Core.Onnx;

/// A parsed ONNX model with what import needs: the opset, the initializers by name, the one image
/// input and the first output. Reading never throws anything but <see cref="OnnxImportException"/>.
public sealed class OnnxGraph
{
    public ModelProto Model { get; }
    public GraphProto Graph => Model.Graph;
    /// The default-domain opset the graph was exported at.
    public long Opset { get; }
    public IReadOnlyDictionary<string, TensorProto> Initializers { get; }
    public string Input { get; }
    public string Output { get; }
    /// The input's declared shape (null entries for symbolic dimensions).
    public IReadOnlyList<long?> InputShape { get; }
    public string Source { get; }

    OnnxGraph(ModelProto model, string source)
    {
        Model = model;
        Source = source;
        if (model.Graph is null || model.Graph.Node.Count == 0)
            throw new OnnxImportException($"{source}: the ONNX model has no graph (or an empty one)");
        var opsets = model.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").ToList();
        Opset = opsets.Count > 0 ? opsets.Max(o => o.Version) : 1;
        var foreign = model.Graph.Node.FirstOrDefault(n => n.Domain is not ("" or "ai.onnx"));
        if (foreign is not null)
            throw OnnxImportException.AtNode(foreign, Opset, $"operators of domain '{foreign.Domain}' are not supported (only the default ONNX domain)");
        var inits = new Dictionary<string, TensorProto>();
        foreach (var t in model.Graph.Initializer) inits[t.Name] = t;
        Initializers = inits;
        var inputs = model.Graph.Input.Where(i => !inits.ContainsKey(i.Name)).ToList();
        if (inputs.Count != 1)
            throw new OnnxImportException($"{source}: the graph has {inputs.Count} inputs besides its weights ({string.Join(", ", inputs.Select(i => i.Name))}); an image model has exactly one");
        if (model.Graph.Output.Count == 0) throw new OnnxImportException($"{source}: the graph has no output");
        Input = inputs[0].Name;
        Output = model.Graph.Output[0].Name;
        var dims = inputs[0].Type?.TensorType?.Shape?.Dim;
        InputShape = dims is null ? [] : dims.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : (long?)null).ToList();
    }

    public static OnnxGraph Read(string path)
    {
        if (!File.Exists(path)) throw new OnnxImportException($"ONNX file '{path}' does not exist");
        return Parse(File.ReadAllBytes(path), $"'{path}'");
    }

    public static OnnxGraph Parse(byte[] bytes, string source)
    {
        ModelProto model;
        try { model = ModelProto.Parser.ParseFrom(bytes); }
        catch (InvalidProtocolBufferException e) { throw new OnnxImportException($"{source} is not an ONNX model ({e.Message.TrimEnd('.')})"); }
        return new OnnxGraph(model, source);
    }
}
