using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoRA around a ConvTranspose2d (a UNet's up path; PEFT has no LoRA for transposed convolutions):
/// lora_A is a transposed convolution in→r with the base layer's kernel, stride, padding, output
/// padding and dilation, lora_B a 1×1 convolution r→out. A 1×1 convolution commutes with the
/// transposed one's scatter, so B(A(x)) = conv_transpose2d(x, ΔW) with the exact merge
/// ΔW[i,o,h,w] = Σ_j A[i,j,h,w]·B[o,j]·s (the base's weight layout in × out × kh × kw).
/// Trainable parameters: r·(in·kh·kw + out). Ungrouped bases only.
public sealed class LoraConvTranspose2d : LoraLayer<nn.Module<Tensor, Tensor>>
{
    public LoraConvTranspose2d(ConvTranspose2d baseLayer) : base(nameof(LoraConvTranspose2d), baseLayer) => RegisterComponents();

    public ConvTranspose2d Base => (ConvTranspose2d)base_layer;
    public override Parameter BaseWeight => Base.weight!;
    public override string? CannotCombine => "transposed convolution";

    public override void AddAdapter(string adapter, LoraOptions o)
    {
        RejectExisting(adapter);
        var c = Base;
        if (c.groups != 1) throw new ArgumentException($"LoRA on a ConvTranspose2d needs groups = 1, got {c.groups}");
        if (o.Variant != LoraVariant.Plain) throw new ArgumentException($"{o.Variant.Name} is not defined on a ConvTranspose2d; use plain LoRA");
        var w = BaseWeight;                          // (in, out, kh, kw)
        long inC = w.shape[0], outC = w.shape[1], kh = w.shape[2], kw = w.shape[3];
        CheckRankFits(o.Rank, inC * kh * kw, outC, "ConvTranspose2d");
        var a = nn.ConvTranspose2d(inC, o.Rank, (kh, kw), stride: (c.stride[0], c.stride[1]), padding: (c.padding![0], c.padding[1]),
                                   output_padding: (c.output_padding[0], c.output_padding[1]), dilation: (c.dilation[0], c.dilation[1]),
                                   bias: false, device: w.device, dtype: w.dtype);
        var b = nn.Conv2d(o.Rank, outC, 1L, bias: false, device: w.device, dtype: w.dtype);
        Register(adapter, o, a, b);
    }

    internal override Tensor WeightNorm(Tensor weight, string adapter) =>
        throw new NotSupportedException("DoRA is not defined on a ConvTranspose2d");

    protected override Tensor MergedWeight(Tensor weight, string adapter) => options[adapter].Variant.MergedWeight(this, weight, adapter);

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        using var scaling = Scaling(adapter).ToScalar();
        var a = WeightA(adapter);                    // (in, r, kh, kw)
        var b = WeightB(adapter);                    // (out, r, 1, 1)
        var delta = torch.einsum("ijhw,oj->iohw", a, b.flatten(1)).mul(scaling);
        return delta.MoveToOuterDisposeScope();
    }

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var o = options[adapter];
        var xd = Dropout(x, o.Dropout);
        using var scaling = o.Scaling.ToScalar();
        var xa = xd.dtype == WeightA(adapter).dtype ? xd : xd.to(WeightA(adapter).dtype);
        var lora = B(adapter).forward(A(adapter).forward(xa)).mul(scaling);
        return o.Variant.AddOutput(this, result, x, xd, lora, adapter).MoveToOuterDisposeScope();
    }
}
