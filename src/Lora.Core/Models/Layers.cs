using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// Small layers shared by the zoo's model families (timm's layers package).
internal static class Init
{
    /// Meta-device tensors have no storage: initialisers that read values are skipped for them.
    public static bool IsMeta(Device? device) => device is not null && device.type == DeviceType.META;

    /// timm's trunc_normal_(std) with cutoffs at ±2 (absolute, as timm does). TorchSharp 0.107's
    /// nn.init.trunc_normal_ fills a constant (observed), so: normal, then clamp.
    public static void TruncNormal(Tensor t, double std, Device? device)
    {
        if (IsMeta(device)) return;
        using var _ = no_grad();
        t.normal_(0.0, std).clamp_(Cutoff.Low, Cutoff.High);
    }

    // Held as Scalars: a temporary one (from `clamp_(-2.0, 2.0)`) may be finalized by the GC while
    // the native op still reads it.
    static readonly (Scalar Low, Scalar High) Cutoff = ((-2.0).ToScalar(), 2.0.ToScalar());

    /// timm's ConvNeXt init: trunc_normal(0.02) weights and zero bias for every Conv2d and Linear.
    public static void ConvAndLinear(nn.Module root, Device? device)
    {
        if (IsMeta(device)) return;
        using var _ = no_grad();
        foreach (var (_, m) in root.named_modules())
        {
            var (w, b) = m switch { Conv2d c => (c.weight, c.bias), Linear l => (l.weight, l.bias), _ => (null, null) };
            if (w is null) continue;
            TruncNormal(w, 0.02, device);
            b?.zero_();
        }
    }

    /// timm's ViT init for Linear layers: trunc_normal(0.02) weights, zero bias.
    public static void Linear(nn.Module<Tensor, Tensor> m, Device? device)
    {
        if (IsMeta(device) || m is not Linear lin) return;
        TruncNormal(lin.weight, 0.02, device);
        using var _ = no_grad();
        if (lin.bias is not null) lin.bias.zero_();
    }
}

/// timm's LayerNorm2d: LayerNorm over the channel dimension of an NCHW tensor.
public sealed class LayerNorm2d : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly long[] shape;
    private readonly double eps;

    public LayerNorm2d(long channels, double eps = 1e-6, Device? device = null) : base(nameof(LayerNorm2d))
    {
        weight = nn.Parameter(ones(channels, device: device));
        bias = nn.Parameter(zeros(channels, device: device));
        shape = new[] { channels };
        this.eps = eps;
        RegisterComponents();
    }

    internal double Eps => eps;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.layer_norm(x.permute(0, 2, 3, 1), shape, weight, bias, eps).permute(0, 3, 1, 2);
        return y.MoveToOuterDisposeScope();
    }
}

/// timm's Mlp: fc1 → GELU (exact erf) → fc2. Both Linear layers are LoRA targets.
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> fc1;
    private nn.Module<Tensor, Tensor> fc2;

    public Mlp(long inFeatures, long hiddenFeatures, long outFeatures, Device? device = null) : base(nameof(Mlp))
    {
        fc1 = nn.Linear(inFeatures, hiddenFeatures, device: device);
        fc2 = nn.Linear(hiddenFeatures, outFeatures, device: device);
        RegisterComponents();
    }

    internal void InitTimm(Device? device) { Init.Linear(fc1, device); Init.Linear(fc2, device); }

    public override Tensor forward(Tensor x)
    {
        using var h = fc1.forward(x);
        using var a = nn.functional.gelu(h);
        return fc2.forward(a);
    }
}

/// Registers or removes a block's optional adapter under a fixed child name (see IAdapterHost).
internal static class AdapterSlot
{
    public static nn.Module<Tensor, Tensor>? Set(nn.Module parent, string name, nn.Module<Tensor, Tensor>? current, nn.Module<Tensor, Tensor>? next)
    {
        // register_module(name, null) unregisters; registering over an existing name throws.
        if (current is not null) parent.register_module(name, null!);
        if (next is not null) parent.register_module(name, next);
        return next;
    }
}
