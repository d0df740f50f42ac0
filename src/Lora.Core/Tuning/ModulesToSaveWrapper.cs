using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A module trained fully alongside the adapters, as PEFT's ModulesToSaveWrapper: the original is
/// kept frozen as `original_module`, and each adapter trains its own copy `modules_to_save.&lt;adapter&gt;`
/// (both count in the total, as in PEFT). With adapters disabled the original is used.
/// It stands in only for one-tensor layers it can copy; any other module to save (SAM's mask
/// decoder, whose forward takes several inputs) is trained in place (see TuningConfig.ModulesToSave).
public sealed class ModulesToSaveWrapper : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public nn.Module<Tensor, Tensor> original_module;
    public AdapterSlots modules_to_save = new();
#pragma warning restore IDE1006

    /// Whether a wrapper can stand in for the module: a one-tensor module that <see cref="ModuleCopy"/> copies.
    public static bool CanWrap(nn.Module m) => m is nn.Module<Tensor, Tensor> && ModuleCopy.Supports(m);

    public ModulesToSaveWrapper(nn.Module<Tensor, Tensor> original) : base(nameof(ModulesToSaveWrapper))
    {
        original_module = original;
        RegisterComponents();
    }

    public string? ActiveAdapter { get; set; }
    public bool AdaptersDisabled { get; set; }

    public IReadOnlyList<string> AdapterNames => modules_to_save.named_children().Select(c => c.name).ToList();

    public nn.Module<Tensor, Tensor> Copy(string adapter) => modules_to_save.Module<nn.Module<Tensor, Tensor>>(adapter);

    public void AddAdapter(string adapter)
    {
        if (AdapterNames.Contains(adapter)) throw new ArgumentException($"adapter '{adapter}' already has a copy of this module");
        modules_to_save.AddModule(adapter, ModuleCopy.Clone(original_module));
    }

    public void DeleteAdapter(string adapter)
    {
        modules_to_save.Remove(adapter);
        if (ActiveAdapter == adapter) ActiveAdapter = null;
    }

    public override Tensor forward(Tensor x)
    {
        var m = AdaptersDisabled || ActiveAdapter is null || !AdapterNames.Contains(ActiveAdapter) ? original_module : Copy(ActiveAdapter);
        // bf16 training keeps the frozen original in bf16 and the trained copy in fp32: feed each its dtype
        var w = m.parameters().FirstOrDefault();
        if (w is null || w.dtype == x.dtype || !x.is_floating_point()) return m.forward(x);
        using var cast = x.to(w.dtype);
        return m.forward(cast);
    }
}

/// Deep copies of the layer types that are commonly trained fully (classifier heads, norms).
public static class ModuleCopy
{
    public static bool Supports(nn.Module m) => m is Linear or Conv2d or LayerNorm or Identity;

    public static nn.Module<Tensor, Tensor> Clone(nn.Module<Tensor, Tensor> m)
    {
        nn.Module<Tensor, Tensor> copy = m switch
        {
            Linear l => nn.Linear(l.in_features, l.out_features, hasBias: l.bias is not null, device: l.weight!.device, dtype: l.weight.dtype),
            Conv2d c => c.padding_type is Padding pt
                ? nn.Conv2d(c.in_channels, c.out_channels, (c.kernel_size[0], c.kernel_size[1]), pt, (c.stride[0], c.stride[1]), (c.dilation[0], c.dilation[1]), c.padding_mode, c.groups, c.bias is not null, c.weight!.device, c.weight.dtype)
                : nn.Conv2d(c.in_channels, c.out_channels, (c.kernel_size[0], c.kernel_size[1]), (c.stride[0], c.stride[1]), (c.padding![0], c.padding[1]), (c.dilation[0], c.dilation[1]), c.padding_mode, c.groups, c.bias is not null, c.weight!.device, c.weight.dtype),
            LayerNorm n => nn.LayerNorm(n.normalized_shape, n.eps, n.elementwise_affine, n.bias is not null, n.weight?.device, n.weight?.dtype),
            Identity => nn.Identity(),
            _ => throw new ArgumentException($"ModulesToSave supports Linear, Conv2d, LayerNorm and Identity modules; got a {m.GetType().Name}"),
        };
        var src = m.state_dict();
        using (torch.no_grad())
            foreach (var (k, v) in copy.state_dict()) v.copy_(src[k]);
        return copy;
    }
}
