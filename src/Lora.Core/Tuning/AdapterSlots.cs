using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A keyed container of per-adapter children (modules or bare parameters), like PEFT's
/// nn.ModuleDict / nn.ParameterDict: the key is the adapter name, so state_dict keys read
/// `lora_A.default.weight` (module) or `lora_E.default` (parameter). Children can be added and removed
/// after the owner is registered, which TorchSharp's ModuleDict does not promise.
public sealed class AdapterSlots : nn.Module
{
    public AdapterSlots() : base(nameof(AdapterSlots)) { }

    public void AddModule(string adapter, nn.Module module) => register_module(adapter, module);

    public void AddParameter(string adapter, Parameter parameter) => register_parameter(adapter, parameter);

    public bool Contains(string adapter) => named_children().Any(c => c.name == adapter) || named_parameters(false).Any(p => p.name == adapter);

    public T Module<T>(string adapter) where T : nn.Module =>
        (T)(named_children().FirstOrDefault(c => c.name == adapter).module
            ?? throw new KeyNotFoundException($"no adapter named '{adapter}' in this layer"));

    public Parameter Parameter(string adapter) =>
        named_parameters(false).FirstOrDefault(p => p.name == adapter).parameter
            ?? throw new KeyNotFoundException($"no adapter named '{adapter}' in this layer");

    /// Replaces a parameter by a new tensor (used to resize AdaLoRA ranks on load).
    public void SetParameter(string adapter, Parameter parameter)
    {
        Remove(adapter);
        register_parameter(adapter, parameter);
    }

    public void Remove(string adapter)
    {
        foreach (var (name, module) in named_children().ToList())
            if (name == adapter) { register_module(adapter, null!); module.Dispose(); }
        if (named_parameters(false).Any(p => p.name == adapter))
            ConditionallyRegisterParameter(adapter, (Tensor)null!);
    }
}
