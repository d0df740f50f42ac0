using Lora.Core.IO;
using Lora.Core.Tuning;
using Lora.CommandLine;
using Lora.Dsl;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora forward --model M [--model-config J] [--weights W] [--adapter A] --input in.safetensors --out out.safetensors`
/// (or `--run HASH|DIR` for a finished run's model, its adapter applied as the method allows):
/// the eval-mode forward of the tensor `input`, written as the tensor `output` (fp32): how users
/// check parity with another framework (the tests check imported graphs against ONNX Runtime).
public static class ForwardCommand
{
    public static int Run(ForwardOptions o, TextWriter stdout)
    {
        var (model, run) = RunModel.FromCommandLine(o.Model, o.Run, o.Results, o.ModelConfig, o.Weights, o.Adapters, mustMerge: false);
        using var _model = model;
        var tensors = Safetensors.Load(o.Input);
        if (!tensors.TryGetValue("input", out var input))
            throw new InvalidDataException($"'{o.Input}' has no tensor named 'input' (it has {string.Join(", ", tensors.Keys.Take(5))})");
        using var _ = torch.no_grad();
        using var x = input.to(ScalarType.Float32);
        using var y = model.call(x).to(ScalarType.Float32);
        Safetensors.Save(o.Out, [new("output", y)]);
        stdout.WriteLine($"forward of {o.Model ?? run!.Card.Id} on input [{string.Join(", ", x.shape)}]: wrote {o.Out} (output [{string.Join(", ", y.shape)}])");
        return 0;
    }
}
