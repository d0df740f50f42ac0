using Lora.Core.Tuning;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// A step hook with state of its own (AdaLoRA's importance averages) that checkpoints must keep for a
/// resumed run to match an uninterrupted one. Hooks without state need not implement this.
public interface IStatefulStepHook : IStepHook
{
    IEnumerable<(string Name, Tensor Value)> StateTensors();
    void LoadState(IReadOnlyDictionary<string, Tensor> tensors);
}
