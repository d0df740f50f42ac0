using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// One convolutional bypass of Convpass (Jie &amp; Deng 2022, the PETL-ViT reference code):
/// up(drop(act(conv3×3(act(down(x)))))) with QuickGELU act, the 3×3 conv over the token grid.
/// Tokens outside the grid (a ViT's class token, VPT's prompts) each go through the same conv as a
/// 1×1 image, as the paper treats the class token (only the kernel's centre tap reaches them).
/// Initialisation as the paper's default: down Xavier-uniform, the conv the identity at its centre
/// tap, up and every bias zero, so a fresh bypass adds nothing. Keys `adapter_down`, `adapter_conv`,
/// `adapter_up` as in the reference code.
public sealed class ConvpassModule : nn.Module<Tensor, Tensor>, IAdapterModule
{
#pragma warning disable IDE1006 // state-dict keys
    public Linear adapter_down;
    public Conv2d adapter_conv;
    public Linear adapter_up;
#pragma warning restore IDE1006
    readonly double dropout;

    public ConvpassModule(long dim, long width, double dropout = 0.1, ScalarType? dtype = null, Device? device = null) : base(nameof(ConvpassModule))
    {
        if (width > BottleneckAdapter.MaxRatio * dim)
            throw new ArgumentException($"Convpass width {width} is more than {BottleneckAdapter.MaxRatio}x the block's width {dim}");
        this.dropout = dropout;
        adapter_down = nn.Linear(dim, width, dtype: dtype, device: device);
        adapter_conv = nn.Conv2d(width, width, 3, padding: 1, dtype: dtype, device: device);
        adapter_up = nn.Linear(width, dim, dtype: dtype, device: device);
        using (torch.no_grad())
        {
            nn.init.xavier_uniform_(adapter_down.weight!);
            nn.init.zeros_(adapter_down.bias!);
            nn.init.zeros_(adapter_conv.weight!);
            adapter_conv.weight![TensorIndex.Colon, TensorIndex.Colon, 1, 1].copy_(torch.eye(width, dtype: adapter_conv.weight.dtype, device: adapter_conv.weight.device));
            nn.init.zeros_(adapter_conv.bias!);
            nn.init.zeros_(adapter_up.weight!);
            nn.init.zeros_(adapter_up.bias!);
        }
        RegisterComponents();
    }

    public string Group => "Convpass";

    /// CLIP's QuickGELU, x · σ(1.702 x), the reference code's activation.
    public static Tensor QuickGelu(Tensor x) => x * torch.sigmoid(x * 1.702);

    /// On a BHWC grid (SAM's encoder blocks): [B, H, W, C] → [B, H, W, C].
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var d = QuickGelu(nn.functional.linear(x, TunerLayer.In(adapter_down.weight!, x), TunerLayer.In(adapter_down.bias!, x)));
        return Up(Conv(d.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), x).MoveToOuterDisposeScope();
    }

    /// On a token sequence [B, L, C] whose last h·w tokens are the patch grid (row-major) and whose
    /// leading tokens (class token, prompts) are each convolved as a 1×1 image.
    public Tensor ForwardTokens(Tensor x, long h, long w)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], l = x.shape[1], lead = l - h * w;
        if (lead < 0) throw new ArgumentException($"Convpass expects a {h}×{w} token grid, got {l} tokens");
        var d = QuickGelu(nn.functional.linear(x, TunerLayer.In(adapter_down.weight!, x), TunerLayer.In(adapter_down.bias!, x)));
        long r = d.shape[2];
        var grid = d.narrow(1, lead, h * w).reshape(b, h, w, r).permute(0, 3, 1, 2);
        var patches = Conv(grid).permute(0, 2, 3, 1).reshape(b, h * w, r);
        var y = patches;
        if (lead > 0)
        {
            var single = Conv(d.narrow(1, 0, lead).reshape(b * lead, r, 1, 1)).reshape(b, lead, r);
            y = torch.cat(new[] { single, patches }, 1);
        }
        return Up(y, x).MoveToOuterDisposeScope();
    }

    Tensor Conv(Tensor x) => nn.functional.conv2d(x, TunerLayer.In(adapter_conv.weight!, x), TunerLayer.In(adapter_conv.bias!, x), padding: new long[] { 1, 1 });

    Tensor Up(Tensor h, Tensor x)
    {
        h = QuickGelu(h);
        if (dropout > 0 && training) h = nn.functional.dropout(h, dropout, true);
        return nn.functional.linear(h, TunerLayer.In(adapter_up.weight!, x), TunerLayer.In(adapter_up.bias!, x));
    }
}
