using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A transformer block that can carry Medical-SAM-Adapter style bottleneck adapters:
/// x ← x + attn(norm1(x)); x ← x + attnAdapter(x) (skip inside the adapter's use);
/// n = norm2(x); x ← x + mlp(n) + mlpScale · mlpAdapter(n).
/// Blocks register the adapters under the names "adapter_attn" and "adapter_mlp" so they appear in
/// state_dict and parameters(); passing null removes them.
public interface IAdapterHost
{
    void SetAdapters(nn.Module<Tensor, Tensor>? attnAdapter, nn.Module<Tensor, Tensor>? mlpAdapter, double mlpScale);

    /// The width of the block's residual stream (the adapters' dim). Null lets the tuner infer it
    /// from the block's `norm1` LayerNorm (or its first Linear's in_features).
    long? AdapterDim => null;
}
