using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

// MobileSAM's image encoder: the original TinyViT (Microsoft/MobileSAM key names: patch_embed.seq,
// layers.N with the downsample at the END of a layer, Conv2d_BN's c/bn, norm_head, head) with SAM's
// neck, at stride 16 (the merge into the last stage keeps the resolution). Numerically the same
// blocks as timm's TinyViT; only names and the last stride differ.

/// MobileSAM's PatchEmbed: seq.0 Conv2d_BN, seq.1 GELU, seq.2 Conv2d_BN.
public sealed class MobileSamPatchEmbed : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> seq;

    public MobileSamPatchEmbed(long inChs, long outChs, Device? device = null) : base(nameof(MobileSamPatchEmbed))
    {
        seq = nn.Sequential(new ConvNorm(inChs, outChs / 2, 3, 2, 1, device: device, mobileSamNames: true), nn.GELU(), new ConvNorm(outChs / 2, outChs, 3, 2, 1, device: device, mobileSamNames: true));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => seq.forward(x);
}

/// One MobileSAM layer on NCHW tensors: blocks (MBConvs, or TinyViT blocks run channels-last),
/// then an optional PatchMerging into the next layer's width.
public sealed class MobileSamLayer : nn.Module<Tensor, Tensor>
{
    private ModuleList<nn.Module<Tensor, Tensor>> blocks;
    private nn.Module<Tensor, Tensor>? downsample;
    private readonly bool attention;

    public MobileSamLayer(bool attention, long dim, long depth, long numHeads, long windowSize, double mlpRatio, double expandRatio,
        long? outDim, long downsampleStride, Device? device = null) : base(nameof(MobileSamLayer))
    {
        this.attention = attention;
        blocks = new ModuleList<nn.Module<Tensor, Tensor>>();
        for (var i = 0; i < depth; i++)
            blocks.Add(attention
                ? new TinyVitBlock(dim, numHeads, windowSize, mlpRatio, 3, device, mobileSamNames: true)
                : new MBConv(dim, dim, expandRatio, device, mobileSamNames: true));
        if (outDim is long o) downsample = new PatchMerging(dim, o, device, mobileSamNames: true, stride: downsampleStride);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = attention ? x.permute(0, 2, 3, 1) : x;
        foreach (var b in blocks) y = b.forward(y);
        if (attention) y = y.permute(0, 3, 1, 2);
        if (downsample is not null) y = downsample.forward(y);
        return y.MoveToOuterDisposeScope();
    }
}

/// MobileSAM's TinyViT image encoder with SAM's neck. Output [B, out_chans, H/16, W/16].
/// norm_head and head are unused here; they exist because MobileSAM checkpoints contain them.
public sealed class ImageEncoderMobileSam : nn.Module<Tensor, Tensor>
{
    private MobileSamPatchEmbed patch_embed;
    private ModuleList<MobileSamLayer> layers;
    private nn.Module<Tensor, Tensor> norm_head;
    private nn.Module<Tensor, Tensor> head;
    private nn.Module<Tensor, Tensor> neck;

    public ImageEncoderMobileSam(SamConfig c, Device? device = null) : base(nameof(ImageEncoderMobileSam))
    {
        var dims = c.EmbedDims;
        var n = dims.Length;
        if (new[] { c.Depths.Length, c.NumHeadsPerStage.Length, c.WindowSizes.Length }.Any(k => k != n) || n < 2)
            throw new ArgumentException($"MobileSAM's TinyViT needs at least two stages and embed_dims, depths, num_heads, window_sizes of equal length.");
        patch_embed = new MobileSamPatchEmbed(c.in_chans, dims[0], device);
        layers = new ModuleList<MobileSamLayer>();
        for (var i = 0; i < n; i++)
        {
            long? outDim = i < n - 1 ? dims[i + 1] : null;
            var stride = i == n - 2 ? 1 : 2; // MobileSAM keeps 1/16 resolution into the last stage
            layers.Add(new MobileSamLayer(i > 0, dims[i], c.Depths[i], c.NumHeadsPerStage[i], c.WindowSizes[i], c.mlp_ratio, 4.0, outDim, stride, device));
        }
        norm_head = nn.LayerNorm(dims[^1], device: device);
        head = nn.Linear(dims[^1], 1000, device: device);
        neck = SamNeck.Create(dims[^1], c.out_chans, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = patch_embed.forward(x);
        foreach (var l in layers) y = l.forward(y);
        return neck.forward(y).MoveToOuterDisposeScope();
    }
}
