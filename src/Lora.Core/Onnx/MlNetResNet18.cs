using Lora.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// ML.NET's ImageNet ResNet-18 featurizer (NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18, MIT),
/// the zoo's `resnet18_mlnet`: torchvision's module names, its preprocessing inside the model
/// (feed RGB or grey pixels in [0, 1]), and with num_classes a new fc head after global pooling.
public static class MlNetResNet18
{
    /// The build copies the package's files next to the binaries (Lora.Core.csproj).
    public static string ModelPath => Path.Combine(AppContext.BaseDirectory, "models", "mlnet", "ResNet18.onnx");
    public static string PreprocessPath => Path.Combine(AppContext.BaseDirectory, "models", "mlnet", "ResNetPreprocess.onnx");

    public static OnnxModule Create(ModelArgs args, Device? device)
    {
        if (!File.Exists(ModelPath))
            throw new FileNotFoundException($"resnet18_mlnet: {ModelPath} is missing; it comes from the NuGet package Microsoft.ML.DnnImageFeaturizer.ResNet18 0.23.1 at build time (run dotnet restore and build)", ModelPath);
        var graph = OnnxGraph.Read(ModelPath);
        var options = new OnnxImportOptions(
            NumClasses: args.Has("num_classes") ? args.Long("num_classes", 0) : null,
            Rename: ResNetNames.For(graph),
            Preprocessing: PixelPreprocessing.MlNet(PreprocessPath));
        var model = new OnnxModule(graph, options);
        if (device is not null) model.to(device);
        return model;
    }
}
