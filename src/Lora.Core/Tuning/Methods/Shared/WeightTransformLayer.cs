using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// What OFT, BOFT and HRA layers share: each adapter multiplies the base weight on its input side,
/// W' = T(W) with W viewed as (out, in) or, for a Conv2d, (out, in·kh·kw) (PEFT's layout, `view(out,
/// in·k·k)`), and the forward runs the base op with T(W) — the merged forward itself. Several
/// active adapters transform in turn, in the order merging applies them. Only ungrouped, square,
/// undilated, zero-padded convolutions fit that layout (<see cref="CheckTarget"/>).
public abstract class WeightTransformLayer : TunerLayer
{
    readonly List<string> names = new();

    protected WeightTransformLayer(string name, nn.Module<Tensor, Tensor> baseLayer) : base(name, baseLayer) { }

    public override IReadOnlyList<string> AdapterNames => names;
    public override Parameter BaseWeight => Channels.Own(base_layer, "weight")!;

    /// The size of the transformed side: in_features, or in_channels·kh·kw (PEFT's conv_filter_dim).
    public long Features => FeaturesOf(base_layer);

    public static long FeaturesOf(nn.Module m) => m switch
    {
        Linear l => l.in_features,
        Conv2d c => c.in_channels * c.kernel_size[0] * c.kernel_size[1],
        _ => throw new ArgumentException($"a {m.GetType().Name} has no weight these methods transform"),
    };

    /// T(W) for one adapter, W as (out, features), in the adapter's dtype, with gradient to it.
    protected abstract Tensor Transform(Tensor w, string adapter);

    /// Registers an adapter whose parameters the subclass has just created.
    protected void Added(string adapter) => names.Add(adapter);

    protected void CheckNew(string adapter)
    {
        if (names.Contains(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
    }

    Tensor Apply(Tensor w, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        return Transform(w.reshape(w.shape[0], -1), adapter).reshape(w.shape).MoveToOuterDisposeScope();
    }

    protected override Tensor MergedWeight(Tensor weight, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        return Apply(weight, adapter).to(weight.dtype).MoveToOuterDisposeScope();
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var w = BaseWeight.detach();
        return (MergedWeight(w, adapter) - w).MoveToOuterDisposeScope();
    }

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter) =>
        throw new InvalidOperationException($"{Method} transforms the weight; its forward does not add outputs");

    /// The base op with the weight transformed by every active, unmerged adapter.
    public override Tensor forward(Tensor x)
    {
        if (AdaptersDisabled) return base.forward(x);
        var pending = ActiveAdapters.Where(a => !MergedAdapters.Contains(a)).ToList();
        if (pending.Count == 0) return base_layer.forward(x);
        using var scope = torch.NewDisposeScope();
        Tensor w = BaseWeight;
        foreach (var a in pending) w = Apply(w, a);
        w = In(w, x);
        var bias = Channels.Own(base_layer, "bias") is { } b ? In(b, x) : null;
        var y = base_layer switch
        {
            Conv2d c => nn.functional.conv2d(x, w, bias, c.stride, LycorisLayer.ExplicitPadding(c), c.dilation, c.groups),
            _ => nn.functional.linear(x, w, bias),
        };
        return y.MoveToOuterDisposeScope();
    }

    /// Removes the adapter's parameters (the subclass's containers).
    protected abstract void RemoveParameters(string adapter);

    protected override void RemoveAdapterCore(string adapter)
    {
        RemoveParameters(adapter);
        names.Remove(adapter);
    }

    /// Whether a base module fits the (out, features) layout; null when it does, else why not.
    public static string? CheckTarget(string path, nn.Module module, string method) => module switch
    {
        Linear => null,
        Conv2d c when c.transposed => $"'{path}' is a transposed convolution, which {method} does not support",
        // PEFT views the weight as (out, in_channels·k·k) with k = kernel_size[0]
        Conv2d c when c.groups != 1 => $"'{path}' is a grouped Conv2d (groups={c.groups}), which {method} cannot transform (PEFT's layout needs groups = 1)",
        Conv2d c when c.kernel_size[0] != c.kernel_size[1] => $"'{path}' has a {c.kernel_size[0]}×{c.kernel_size[1]} kernel: {method} supports square kernels only (as PEFT)",
        Conv2d c when c.dilation![0] != 1 || c.dilation[1] != 1 => $"'{path}' is dilated, which {method} does not support (as PEFT)",
        Conv2d c when c.padding_mode != PaddingModes.Zeros => $"'{path}' pads with {c.padding_mode}: {method} supports zero-padded convolutions only",
        Conv2d c when LycorisLayer.ExplicitPadding(c) is null => $"'{path}' pads 'same' unevenly, which {method} does not support",
        Conv2d => null,
        _ => $"'{path}' is a {module.GetType().Name}, which {method} cannot tune (supported: Linear and Conv2d); narrow the pattern",
    };
}
