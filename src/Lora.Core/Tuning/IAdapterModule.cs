namespace Lora.Core.Tuning;

/// A module that is an adapter itself, placed in a block of the model rather than wrapping a layer
/// (bottleneck adapters): summaries count its parameters under <see cref="Group"/>, and reduced
/// precision leaves it float32 (it is cast per forward, as autocast would).
public interface IAdapterModule
{
    /// The summary group of its parameters ("Adapter").
    string Group { get; }
}
