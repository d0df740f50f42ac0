using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// The pixel preprocessing a graph expects, done inside the model so that users feed images in
/// [0, 1] as the loaders produce them: grey becomes 3 channels, then ×Scale, channel order
/// reversed (RGB → BGR) when asked, minus the mean image ([1, C, H, W]) at its own size and minus
/// its per-channel mean at any other size.
public sealed record PixelPreprocessing(float Scale, bool ReverseChannels, Tensor MeanImage)
{
    /// ML.NET's ResNet preprocessing (ResNetPrepOnnx/ResNetPreprocess.onnx: Split → Concat(B, G, R) → Sub MeanImage).
    public static PixelPreprocessing MlNet(string preprocessOnnx)
    {
        var g = OnnxGraph.Read(preprocessOnnx);
        var mean = g.Initializers.TryGetValue("MeanImage", out var t) ? OnnxTensors.ToTorch(t, $"{g.Source} MeanImage")
            : throw new OnnxImportException($"{g.Source} has no MeanImage initializer");
        return new PixelPreprocessing(255f, true, mean);
    }
}
