using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A transformer block that can carry Convpass bypasses (Jie &amp; Deng 2022) beside its attention
/// and its MLP, both fed the branch's normalised input and scaled by s:
/// x ← x + attn(norm1(x)) + s · bypassAttn(norm1(x)); x ← x + mlp(norm2(x)) + s · bypassMlp(norm2(x)).
/// The block registers them as "convpass_attn" and "convpass_mlp"; passing null removes them.
public interface IBypassHost
{
    /// The width of the block's residual stream.
    long BypassDim { get; }

    void SetBypasses(ConvpassModule? attn, ConvpassModule? mlp, double scale);
}
