using Lora.Core.Onnx;
using Lora.CommandLine;
using Lora.Dsl;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora export --model M [--model-config J] [--weights W] [--adapter A] --out model.onnx` (or
/// `--run HASH|DIR` for a finished run's model): the
/// merged model (as merge-and-unload gives it) as an ONNX file. Nothing is written unless the whole
/// export succeeds (atomic write); the inputs are only read.
public static class ExportCommand
{
    public static int Run(ExportOptions o, TextWriter stdout)
    {
        // mergeable adapters are merged; a ViT's bottleneck adapters, AdaptFormer, VPT and Convpass stay in
        // place and ZooExport writes their ops (disabled adapters are unloaded)
        var (model, run) = RunModel.FromCommandLine(o.Model, o.Run, o.Results, o.ModelConfig, o.Weights, o.Adapters, mustMerge: o.Adapters.Disabled);
        using var _model = model;
        var name = o.Model ?? run!.Card.Model;
        WriteOnnx(model, name, o.Out);
        var adapters = o.Adapters.Paths.IsEmpty && run?.Card.Weights == RunCard.AdapterWeights ? "its adapter" : o.Adapters.Paths.IsEmpty ? null : ModelSource.Describe(o.Adapters);
        stdout.WriteLine($"exported {(run is null ? o.Model : $"run {run.Card.Id}")}{(adapters is null ? "" : o.Adapters.Disabled ? " (adapters disabled)" : $" with {adapters} merged")}: wrote {o.Out}");
        return 0;
    }

    /// The one place a model is matched to its ONNX writer: imported graphs write their own graph
    /// back; zoo architectures (ViT, ConvNeXt, ResNet) go through ZooExport at their default input size.
    public static void WriteOnnx(nn.Module<Tensor, Tensor> merged, string modelName, string path)
    {
        switch (merged)
        {
            case OnnxModule imported: OnnxExport.Write(imported, path); break;
            default:
                if (ZooExport.Problem(merged) is { } why) throw new NotSupportedException($"cannot export {modelName} to ONNX: {why}");
                ZooExport.Export(merged, ZooExport.DefaultInputShape(merged), path);
                break;
        }
    }
}
