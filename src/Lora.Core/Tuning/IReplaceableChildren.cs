using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A container that keeps its children in its own table rather than in C# fields (an imported
/// ONNX graph's scopes): it replaces the child itself; ModuleTree then updates the registry.
public interface IReplaceableChildren
{
    /// Replaces child <paramref name="name"/>; with dryRun only checks (ArgumentException when it cannot).
    void ReplaceChild(string name, nn.Module<Tensor, Tensor>? replacement, bool dryRun);
}
