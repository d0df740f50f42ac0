using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoRA around a Conv2d: lora_A is a k×k convolution in→r with the base layer's stride, padding,
/// dilation and padding mode, lora_B a 1×1 convolution r→out. For a grouped base (g groups) both A
/// and B are grouped with g groups, which keeps ΔW block-diagonal like W; it needs r divisible by g
/// (other ranks are rejected: no exact grouped composition exists for them). The merged ΔW is the
/// exact composition ΔW[o,c] = Σ_j B[o,j]·A[j,c] within each group.
public sealed class LoraConv2d : LoraLayer<Conv2d>
{
    public LoraConv2d(Conv2d baseLayer) : base(nameof(LoraConv2d), baseLayer) => RegisterComponents();

    public Conv2d Base => (Conv2d)base_layer;
    public override Parameter BaseWeight => Base.weight!;
    public override string? CannotCombine => Base.groups == 1 ? null : "grouped convolution";

    public override void AddAdapter(string adapter, LoraOptions o)
    {
        RejectExisting(adapter);
        var c = Base;
        var g = c.groups;
        if (o.Rank <= 0 || o.Rank % g != 0)
            throw new ArgumentException($"LoRA rank {o.Rank} on a Conv2d with groups={g} must be a positive multiple of {g}, so that ΔW keeps the grouped structure exactly");
        CheckRankFits(o.Rank, c.in_channels * c.kernel_size[0] * c.kernel_size[1], c.out_channels, "Conv2d");
        var w = BaseWeight;
        var k = (c.kernel_size[0], c.kernel_size[1]);
        var stride = (c.stride[0], c.stride[1]);
        var dilation = (c.dilation[0], c.dilation[1]);
        Conv2d a = c.padding_type is Padding pt
            ? nn.Conv2d(c.in_channels, o.Rank, k, pt, stride, dilation, c.padding_mode, g, bias: false, device: w.device, dtype: w.dtype)
            : nn.Conv2d(c.in_channels, o.Rank, k, stride, (c.padding![0], c.padding[1]), dilation, c.padding_mode, g, bias: false, device: w.device, dtype: w.dtype);
        var b = nn.Conv2d(o.Rank, c.out_channels, 1L, 1L, 0L, 1L, PaddingModes.Zeros, g, bias: false, device: w.device, dtype: w.dtype);
        Register(adapter, o, a, b);
    }

    /// Norms of W + ΔW over everything but the output channel, shaped (1, out, 1, 1) as PEFT's
    /// conv DoRA magnitude; detached.
    internal override Tensor WeightNorm(Tensor weight, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var w = weight.Plus(DeltaWeight(adapter).detach());
        return w.square().sum(new long[] { 1, 2, 3 }, keepdim: true).sqrt().transpose(1, 0).MoveToOuterDisposeScope();
    }

    protected override Tensor MergedWeight(Tensor weight, string adapter) => options[adapter].Variant.MergedWeight(this, weight, adapter);

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        using var scaling = Scaling(adapter).ToScalar();
        var a = A(adapter).weight!;                 // (r, in/g, kh, kw)
        var b = B(adapter).weight!;                 // (out, r/g, 1, 1)
        long g = Base.groups, r = a.shape[0], outC = b.shape[0];
        var ag = a.reshape(g, r / g, -1);           // (g, r/g, in/g·kh·kw)
        var bg = b.reshape(g, outC / g, r / g);     // (g, out/g, r/g)
        var delta = bg.bmm(ag).reshape(BaseWeight.shape).mul(scaling);
        return delta.MoveToOuterDisposeScope();
    }

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var o = options[adapter];
        var xd = Dropout(x, o.Dropout);
        using var scaling = o.Scaling.ToScalar();
        var xa = xd.dtype == A(adapter).weight!.dtype ? xd : xd.to(A(adapter).weight!.dtype);
        var lora = B(adapter).forward(A(adapter).forward(xa)).mul(scaling);
        return o.Variant.AddOutput(this, result, x, xd, lora, adapter).MoveToOuterDisposeScope();
    }
}
