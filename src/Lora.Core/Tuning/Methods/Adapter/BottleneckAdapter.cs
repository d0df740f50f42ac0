using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// The bottleneck adapter of Medical-SAM-Adapter: fc1 (dim → ratio·dim), GELU, fc2 (back to dim).
/// It has no skip of its own: the host block adds it (x + adapter(x) after attention, and
/// 0.5·adapter(n) beside the MLP). Not mergeable: it is non-linear.
public sealed class BottleneckAdapter : nn.Module<Tensor, Tensor>, IAdapterModule
{
#pragma warning disable IDE1006
    public Linear fc1;
    public Linear fc2;
#pragma warning restore IDE1006
    readonly GELU act = nn.GELU();

    /// The widest bottleneck allowed, as a multiple of the block's width.
    public const int MaxRatio = 4;

    /// <param name="width">the bottleneck width; 0 takes it from <paramref name="ratio"/> × dim</param>
    public BottleneckAdapter(long dim, double ratio = 0.25, bool initIdentity = false, ScalarType? dtype = null, Device? device = null, long width = 0)
        : base(nameof(BottleneckAdapter))
    {
        // bounded by the block before allocating: a config's adapter_width 1048576 (or adapter_ratio
        // 20000) on a 64-wide block would take gigabytes
        if (!(ratio > 0 && ratio <= MaxRatio) && width <= 0)
            throw new ArgumentException($"adapter_ratio {ratio} must be in (0, {MaxRatio}] (a bottleneck at most {MaxRatio}x the block's width {dim})");
        var hidden = width > 0 ? width : Math.Max(1L, (long)(dim * ratio));
        if (hidden > MaxRatio * dim)
            throw new ArgumentException($"adapter_width {hidden} is more than {MaxRatio}x the block's width {dim} (at most {MaxRatio * dim})");
        fc1 = nn.Linear(dim, hidden, dtype: dtype, device: device);
        fc2 = nn.Linear(hidden, dim, dtype: dtype, device: device);
        if (initIdentity)
            using (torch.no_grad()) { nn.init.zeros_(fc2.weight!); nn.init.zeros_(fc2.bias!); }
        RegisterComponents();
    }

    public long Dim => fc1.in_features;

    public string Group => "Adapter";

    /// In the block's dtype: an fp32 trainable adapter on a bf16 frozen block computes in bf16, as autocast.
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = act.forward(nn.functional.linear(x, TunerLayer.In(fc1.weight!, x), TunerLayer.In(fc1.bias!, x)));
        return nn.functional.linear(h, TunerLayer.In(fc2.weight!, x), TunerLayer.In(fc2.bias!, x)).MoveToOuterDisposeScope();
    }
}
