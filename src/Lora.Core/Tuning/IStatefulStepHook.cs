using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A step hook with state of its own (AdaLoRA's importance averages) that checkpoints must keep for a
/// resumed run to match an uninterrupted one. Hooks without state need not implement this.
public interface IStatefulStepHook : IStepHook
{
    /// Named tensors to save. The caller writes them within a dispose scope of its own and does not
    /// dispose them otherwise: a hook may return its own state tensors or new ones.
    IEnumerable<(string Name, Tensor Value)> StateTensors();

    /// Restores the state from the saved tensors, which the caller disposes afterwards (copy them).
    void LoadState(IReadOnlyDictionary<string, Tensor> tensors);
}
