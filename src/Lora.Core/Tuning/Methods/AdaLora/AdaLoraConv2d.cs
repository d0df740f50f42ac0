using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaLoRA around an ungrouped, zero-padded Conv2d, as PEFT's adalora.SVDConv2d (PEFT 0.20+): A is
/// r×(in_channels·kh·kw), B out×r, and the forward adds conv2d(x, ΔW) with ΔW = B·(A ∘ E)·scaling /
/// (ranknum + 1e-5) reshaped to the kernel, with the base's stride, padding and dilation. (PEFT's
/// reshape fails for groups &gt; 1, so grouped convolutions are refused at matching.)
public sealed class AdaLoraConv2d : AdaLoraLayer
{
    public AdaLoraConv2d(Conv2d baseLayer) : base(nameof(AdaLoraConv2d), baseLayer) => RegisterComponents();

    public Conv2d Base => (Conv2d)base_layer;
    public override Parameter BaseWeight => Base.weight!;
    public override long InFeatures => Base.in_channels * Base.kernel_size[0] * Base.kernel_size[1];
    public override long OutFeatures => Base.out_channels;
    protected override string LayerKind => "Conv2d";

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var xd = Dropout(x, options[adapter].dropout);
        var c = Base;
        var delta = In(B(adapter).matmul(A(adapter) * ScaledE(adapter)).reshape(c.weight!.shape), xd);
        var y = nn.functional.conv2d(xd, delta, null, c.stride, LycorisLayer.ExplicitPadding(c), c.dilation, c.groups);
        return AddInResultDtype(result, y).MoveToOuterDisposeScope();
    }
}
