using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// The bottleneck adapter of Medical-SAM-Adapter: fc1 (dim → ratio·dim), GELU, fc2 (back to dim).
/// It has no skip of its own: the host block adds it (x + adapter(x) after attention, and
/// 0.5·adapter(n) beside the MLP). Not mergeable: it is non-linear.
public sealed class BottleneckAdapter : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public Linear fc1;
    public Linear fc2;
#pragma warning restore IDE1006
    readonly GELU act = nn.GELU();

    /// <param name="width">the bottleneck width; 0 takes it from <paramref name="ratio"/> × dim</param>
    public BottleneckAdapter(long dim, double ratio = 0.25, bool initIdentity = false, ScalarType? dtype = null, Device? device = null, long width = 0)
        : base(nameof(BottleneckAdapter))
    {
        var hidden = width > 0 ? width : Math.Max(1L, (long)(dim * ratio));
        fc1 = nn.Linear(dim, hidden, dtype: dtype, device: device);
        fc2 = nn.Linear(hidden, dim, dtype: dtype, device: device);
        if (initIdentity)
            using (torch.no_grad()) { nn.init.zeros_(fc2.weight!); nn.init.zeros_(fc2.bias!); }
        RegisterComponents();
    }

    public long Dim => fc1.in_features;

    public override Tensor forward(Tensor x)
    {
        if (fc1.weight!.dtype == x.dtype)
        {
            using var h = fc1.forward(x);
            using var a = act.forward(h);
            return fc2.forward(a);
        }
        // fp32 trainable adapter on a bf16 frozen block: compute in the block's dtype (as autocast)
        using var scope = NewDisposeScope();
        var t = x.dtype;
        var y = nn.functional.linear(act.forward(nn.functional.linear(x, fc1.weight.to(t), fc1.bias!.to(t))), fc2.weight!.to(t), fc2.bias!.to(t));
        return y.MoveToOuterDisposeScope();
    }
}
