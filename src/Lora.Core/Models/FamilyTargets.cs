using Lora.Core.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// The layers a layer-targeting method (LoRA, DoRA, AdaLoRA, LoHa, LoKr, VeRA, (IA)³) sensibly
/// tunes on each zoo family, by role: `LowRank` what `lora bench`'s `lora` preset targets (a ViT's
/// attention qkv, as PEFT's examples), `All` what `lora-all` targets, `FeedForward` the layers
/// (IA)³ scales at their input (PEFT's feedforward_modules). The one place that decides them:
/// `lora bench` builds its presets from them, and a target pattern that matches nothing is told
/// which of them would fit. Names only a model's own modules carry are kept (a basic-block ResNet
/// has no conv3).
public sealed record FamilyTargets(string Family, IReadOnlyList<string> LowRank, IReadOnlyList<string> All, IReadOnlyList<string> FeedForward)
{
    static readonly Dictionary<string, (string Family, string[] LowRank, string[] All, string[] FeedForward)> ByModel = new()
    {
        ["VisionTransformer"] = ("vit", ["qkv"], ["qkv", "proj", "fc1", "fc2"], ["fc2"]),
        ["TinyVit"] = ("tiny_vit", ["qkv"], ["qkv", "proj", "fc1", "fc2"], ["fc2"]),
        // segment-anything's encoder names its MLP lin1, lin2, as does the mask decoder (a module to
        // save, which must hold no target): the encoder's blocks only
        ["ImageEncoderViT"] = ("sam_vit", ["qkv"], ["qkv", "proj", @"re:(.*\.)?blocks\.\d+\.mlp\.lin[12]"], [@"re:(.*\.)?blocks\.\d+\.mlp\.lin2"]),
        ["ImageEncoderTinyViT"] = ("sam_tiny_vit", ["qkv"], ["qkv", "proj", "fc1", "fc2"], ["fc2"]),
        ["ImageEncoderMobileSam"] = ("sam_tiny_vit", ["qkv"], ["qkv", "proj", "fc1", "fc2"], ["fc2"]),
        // no attention: the inverted bottleneck's pointwise Linears (the depthwise conv is grouped)
        ["ConvNeXt"] = ("convnext", ["fc1", "fc2"], ["fc1", "fc2"], ["fc2"]),
        // every block's convolutions (and the stem's conv1)
        ["ResNet"] = ("resnet", ["conv1", "conv2"], ["conv1", "conv2", "conv3"], []),
        ["UNet"] = ("unet", ["conv1", "conv2"], ["conv1", "conv2"], []),
    };

    /// The targets of the model's family, or null for a model outside the zoo's families (an
    /// imported ONNX graph).
    public static FamilyTargets? For(nn.Module model)
    {
        // a whole SAM is its image encoder's family (the first module of a known kind)
        var key = model.modules().Prepend(model).Select(m => m.GetType().Name).FirstOrDefault(ByModel.ContainsKey);
        if (key is null) return null;
        var t = ByModel[key];
        var paths = model.named_modules().Select(m => m.name).Where(p => p.Length > 0).ToList();
        string[] Present(string[] names) => names.Where(n => paths.Any(p => ModulePattern.Matches(n, p))).ToArray();
        return new FamilyTargets(t.Family, Present(t.LowRank), Present(t.All), Present(t.FeedForward));
    }

    /// (IA)³'s targets: the low-rank targets and the feed-forward layers.
    public IReadOnlyList<string> Ia3 => LowRank.Concat(FeedForward).Distinct().ToList();
}
