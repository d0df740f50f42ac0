using Lora.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// Where the channels of a layer's output are, for the methods that scale or shift them per
/// channel (BitFit, SSF, (IA)³, LN tuning): dim 1 of NCHW outputs (Conv2d, BatchNorm2d,
/// LayerNorm2d), the last dim otherwise (Linear, LayerNorm over the last dim).
public static class Channels
{
    public static bool First(nn.Module m) => m is Conv2d or BatchNorm2d or LayerNorm2d;

    /// The output channels of a layer these methods can tune, or null when they cannot.
    public static long? Of(nn.Module m) => m switch
    {
        Linear l => l.out_features,
        Conv2d c when !c.transposed => c.out_channels,
        LayerNorm n when n.normalized_shape.Length == 1 => n.normalized_shape[0],
        BatchNorm2d or LayerNorm2d => Own(m, "weight")?.shape[0],
        _ => null,
    };

    /// A per-channel vector shaped to broadcast against the layer's output.
    public static Tensor Along(Tensor v, nn.Module m) => First(m) ? v.view(1, -1, 1, 1) : v;

    /// A parameter of the module itself (not of its children), or null.
    public static Parameter? Own(nn.Module m, string name) =>
        m.named_parameters(false).FirstOrDefault(p => p.name == name).parameter;

    /// Whether the module is a normalisation layer (LayerNorm, BatchNorm2d, LayerNorm2d).
    public static bool IsNorm(nn.Module m) => m is LayerNorm or BatchNorm2d or LayerNorm2d;

    /// A fresh parameter of the given length, in the dtype and on the device of a reference tensor.
    public static Parameter Vector(long n, double fill, Tensor like) =>
        new(torch.full(n, fill, dtype: like.dtype, device: like.device));
}
