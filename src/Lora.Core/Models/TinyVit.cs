using Lora.Core.Training;
using Lora.Core.Tuning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// A bias-free Conv2d followed by BatchNorm2d: timm's ConvNorm (keys conv.*, bn.*) or, with
/// MobileSAM's names, the original TinyViT's Conv2d_BN (keys c.*, bn.*). One layer, two key names.
public sealed class ConvNorm : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> conv;
    readonly BatchNorm2d bn;

    public ConvNorm(long inChs, long outChs, long ks = 1, long stride = 1, long pad = 0, long groups = 1, double bnWeightInit = 1.0,
                    Device? device = null, bool mobileSamNames = false) : base(mobileSamNames ? "Conv2dBN" : nameof(ConvNorm))
    {
        conv = nn.Conv2d(inChs, outChs, ks, stride: stride, padding: pad, groups: groups, bias: false, device: device);
        bn = nn.BatchNorm2d(outChs, device: device);
        if (!Init.IsMeta(device) && bnWeightInit != 1.0) { using var _ = no_grad(); using var v = bnWeightInit.ToScalar(); bn.weight!.fill_(v); } // held Scalar: see Block.mlpScale
        // registered by hand: the conv's key depends on the naming, not on the field
        register_module(mobileSamNames ? "c" : "conv", conv);
        register_module("bn", bn);
    }

    public override Tensor forward(Tensor x)
    {
        using var c = conv.forward(x);
        return bn.forward(c);
    }
}

/// timm's TinyViT PatchEmbed: two stride-2 ConvNorms with GELU between (overall stride 4).
public sealed class TinyVitPatchEmbed : nn.Module<Tensor, Tensor>
{
    private ConvNorm conv1;
    private ConvNorm conv2;

    public TinyVitPatchEmbed(long inChs, long outChs, Device? device = null) : base(nameof(TinyVitPatchEmbed))
    {
        conv1 = new ConvNorm(inChs, outChs / 2, 3, 2, 1, device: device);
        conv2 = new ConvNorm(outChs / 2, outChs, 3, 2, 1, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return conv2.forward(nn.functional.gelu(conv1.forward(x))).MoveToOuterDisposeScope();
    }
}

/// timm's MBConv: 1×1 expand, 3×3 depthwise, 1×1 project (BN weight 0), residual, GELU.
public sealed class MBConv : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> conv1;
    private nn.Module<Tensor, Tensor> conv2;
    private nn.Module<Tensor, Tensor> conv3;

    public MBConv(long inChs, long outChs, double expandRatio, Device? device = null, bool mobileSamNames = false) : base(nameof(MBConv))
    {
        var mid = (long)(inChs * expandRatio);
        conv1 = new ConvNorm(inChs, mid, 1, device: device, mobileSamNames: mobileSamNames);
        conv2 = new ConvNorm(mid, mid, 3, 1, 1, groups: mid, device: device, mobileSamNames: mobileSamNames);
        conv3 = new ConvNorm(mid, outChs, 1, bnWeightInit: 0.0, device: device, mobileSamNames: mobileSamNames);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.gelu(conv1.forward(x));
        y = nn.functional.gelu(conv2.forward(y));
        y = conv3.forward(y).Plus(x);
        return nn.functional.gelu(y).MoveToOuterDisposeScope();
    }
}

/// timm's TinyViT PatchMerging: 1×1, stride-2 depthwise 3×3, 1×1 ConvNorms (NCHW in and out).
public sealed class PatchMerging : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> conv1;
    private nn.Module<Tensor, Tensor> conv2;
    private nn.Module<Tensor, Tensor> conv3;

    public PatchMerging(long dim, long outDim, Device? device = null, bool mobileSamNames = false, long stride = 2) : base(nameof(PatchMerging))
    {
        conv1 = new ConvNorm(dim, outDim, 1, 1, 0, device: device, mobileSamNames: mobileSamNames);
        conv2 = new ConvNorm(outDim, outDim, 3, stride, 1, groups: outDim, device: device, mobileSamNames: mobileSamNames);
        conv3 = new ConvNorm(outDim, outDim, 1, 1, 0, device: device, mobileSamNames: mobileSamNames);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.gelu(conv1.forward(x));
        y = nn.functional.gelu(conv2.forward(y));
        return conv3.forward(y).MoveToOuterDisposeScope();
    }
}

/// timm's ConvLayer: the first TinyViT stage, a run of MBConvs.
public sealed class ConvLayer : nn.Module<Tensor, Tensor>
{
    private ModuleList<MBConv> blocks;

    public ConvLayer(long dim, long depth, double expandRatio, Device? device = null) : base(nameof(ConvLayer))
    {
        blocks = new ModuleList<MBConv>();
        for (var i = 0; i < depth; i++) blocks.Add(new MBConv(dim, dim, expandRatio, device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        foreach (var b in blocks) x = b.forward(x);
        return x.MoveToOuterDisposeScope();
    }
}

/// timm's NormMlp: LayerNorm, fc1, GELU, fc2.
public sealed class NormMlp : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> norm;
    private nn.Module<Tensor, Tensor> fc1;
    private nn.Module<Tensor, Tensor> fc2;

    public NormMlp(long inFeatures, long hiddenFeatures, Device? device = null) : base(nameof(NormMlp))
    {
        norm = nn.LayerNorm(inFeatures, device: device);
        fc1 = nn.Linear(inFeatures, hiddenFeatures, device: device);
        fc2 = nn.Linear(hiddenFeatures, inFeatures, device: device);
        RegisterComponents();
        Init.Linear(fc1, device);
        Init.Linear(fc2, device);
    }

    public override Tensor forward(Tensor x)
    {
        using var n = norm.forward(x);
        return ForwardNormed(n);
    }

    /// The LayerNorm alone (blocks feed its output to an MLP adapter too).
    internal Tensor Norm(Tensor x) => norm.forward(x);

    /// fc1 → GELU → fc2 on an already normalised input.
    internal Tensor ForwardNormed(Tensor n)
    {
        using var scope = NewDisposeScope();
        return fc2.forward(nn.functional.gelu(fc1.forward(n))).MoveToOuterDisposeScope();
    }
}

/// timm's TinyViT Attention: LayerNorm, qkv, attention with learned biases per (|dy|, |dx|) offset
/// inside the window (attention_biases [heads, offsets]), proj.
public sealed class TinyVitAttention : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> norm;
    private nn.Module<Tensor, Tensor> qkv;
    private nn.Module<Tensor, Tensor> proj;
    private Parameter attention_biases;
    // timm keeps the index table as a non-persistent buffer; a plain array keeps it out of state_dict.
    private readonly long[] biasIdxs;
    private readonly long numHeads, keyDim, valDim, windowTokens;

    public TinyVitAttention(long dim, long keyDim, long numHeads, long attnRatio, long resolution, Device? device = null) : base(nameof(TinyVitAttention))
    {
        this.numHeads = numHeads;
        this.keyDim = keyDim;
        valDim = attnRatio * keyDim;
        norm = nn.LayerNorm(dim, device: device);
        qkv = nn.Linear(dim, numHeads * (valDim + 2 * keyDim), device: device);
        proj = nn.Linear(valDim * numHeads, dim, device: device);
        var offsets = new Dictionary<(long, long), long>();
        windowTokens = resolution * resolution;
        biasIdxs = new long[windowTokens * windowTokens];
        var k = 0;
        for (long p1 = 0; p1 < windowTokens; p1++)
            for (long p2 = 0; p2 < windowTokens; p2++)
            {
                var off = (Math.Abs(p1 / resolution - p2 / resolution), Math.Abs(p1 % resolution - p2 % resolution));
                if (!offsets.TryGetValue(off, out var id)) offsets[off] = id = offsets.Count;
                biasIdxs[k++] = id;
            }
        attention_biases = nn.Parameter(zeros(numHeads, offsets.Count, device: device));
        RegisterComponents();
        Init.Linear(qkv, device);
        Init.Linear(proj, device);
    }

    /// The attention's own input norm (Convpass's bypass beside the attention takes its output).
    internal Tensor Norm(Tensor x) => norm.forward(x);

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], n = x.shape[1];
        var idx = tensor(biasIdxs, device: x.device).view(windowTokens, windowTokens);
        var bias = attention_biases.index(TensorIndex.Colon, TensorIndex.Tensor(idx));
        var t = qkv.forward(norm.forward(x)).view(b, n, numHeads, -1).split(new[] { keyDim, keyDim, valDim }, 3);
        var q = t[0].permute(0, 2, 1, 3);
        var kk = t[1].permute(0, 2, 1, 3);
        var v = t[2].permute(0, 2, 1, 3);
        // the bias (float32 under bf16 training: this module is not a leaf) must match q for SDPA's kernels
        var o = nn.functional.scaled_dot_product_attention(q, kk, v, bias.to(q.dtype));
        return proj.forward(o.transpose(1, 2).reshape(b, n, valDim * numHeads)).MoveToOuterDisposeScope();
    }
}

/// timm's TinyVitBlock (BHWC in and out): windowed attention with residual, depthwise local conv,
/// NormMlp with residual; optional bottleneck adapters (IAdapterHost; the MLP adapter sees the
/// NormMlp's normalised input, like norm2's output in a ViT block); optional Convpass bypasses
/// (IBypassHost) on the BHWC grid beside the attention (fed its own norm's output, as Convpass's
/// Swin variant feeds norm1's) and beside the NormMlp (fed its normalised input).
public sealed class TinyVitBlock : nn.Module<Tensor, Tensor>, IAdapterHost, IBypassHost
{
    private TinyVitAttention attn;
    private NormMlp mlp;
    private nn.Module<Tensor, Tensor> local_conv;
    private nn.Module<Tensor, Tensor>? adapter_attn;
    private nn.Module<Tensor, Tensor>? adapter_mlp;
    // Held as a Scalar: a temporary one (from `t * 0.5`) may be finalized by the GC while the
    // native op still reads it.
    private Scalar mlpScale = 1.0.ToScalar();
    private readonly long windowSize;
    private ConvpassModule? convpass_attn;
    private ConvpassModule? convpass_mlp;
    private Scalar bypassScale = 1.0.ToScalar();
    private readonly long dim;

    public TinyVitBlock(long dim, long numHeads, long windowSize, double mlpRatio, long localConvSize, Device? device = null, bool mobileSamNames = false) : base(nameof(TinyVitBlock))
    {
        if (dim % numHeads != 0) throw new ArgumentException($"TinyViT dim {dim} must be divisible by num_heads {numHeads}.");
        this.windowSize = windowSize;
        attn = new TinyVitAttention(dim, dim / numHeads, numHeads, 1, windowSize, device);
        mlp = new NormMlp(dim, (long)(dim * mlpRatio), device);
        local_conv = new ConvNorm(dim, dim, localConvSize, 1, localConvSize / 2, groups: dim, device: device, mobileSamNames: mobileSamNames);
        this.dim = dim;
        RegisterComponents();
    }

    public long BypassDim => dim;

    public void SetBypasses(ConvpassModule? attn, ConvpassModule? mlp, double scale)
    {
        convpass_attn = (ConvpassModule?)AdapterSlot.Set(this, "convpass_attn", convpass_attn, attn);
        convpass_mlp = (ConvpassModule?)AdapterSlot.Set(this, "convpass_mlp", convpass_mlp, mlp);
        bypassScale.Dispose();
        bypassScale = scale.ToScalar();
    }

    public void SetAdapters(nn.Module<Tensor, Tensor>? attnAdapter, nn.Module<Tensor, Tensor>? mlpAdapter, double mlpScale)
    {
        adapter_attn = AdapterSlot.Set(this, "adapter_attn", adapter_attn, attnAdapter);
        adapter_mlp = AdapterSlot.Set(this, "adapter_mlp", adapter_mlp, mlpAdapter);
        this.mlpScale.Dispose();
        this.mlpScale = mlpScale.ToScalar();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape[3], l = h * w, ws = windowSize;
        Tensor a;
        if (h == ws && w == ws)
            a = attn.forward(x.reshape(b, l, c)).view(b, h, w, c);
        else
        {
            long padB = (ws - h % ws) % ws, padR = (ws - w % ws) % ws;
            var y = padB > 0 || padR > 0 ? nn.functional.pad(x, new long[] { 0, 0, 0, padR, 0, padB }) : x;
            long ph = h + padB, pw = w + padR, nh = ph / ws, nw = pw / ws;
            y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c);
            y = attn.forward(y);
            y = y.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c);
            if (padB > 0 || padR > 0)
                y = y.index(TensorIndex.Colon, TensorIndex.Slice(0, h), TensorIndex.Slice(0, w)).contiguous();
            a = y;
        }
        var bypass = convpass_attn is null ? null : convpass_attn.forward(attn.Norm(x)) * bypassScale;
        x = x.Plus(a);
        if (bypass is not null) x = x.Plus(bypass);
        if (adapter_attn is not null) x = x.Plus(adapter_attn.forward(x));
        var t = local_conv.forward(x.permute(0, 3, 1, 2)).reshape(b, c, l).transpose(1, 2);
        var n = mlp.Norm(t);
        var o = t.Plus(mlp.ForwardNormed(n));
        if (convpass_mlp is not null) o = o.Plus(convpass_mlp.forward(n.view(b, h, w, c)).view(b, l, c) * bypassScale);
        if (adapter_mlp is not null) o = o.Plus(adapter_mlp.forward(n) * mlpScale);
        return o.view(b, h, w, c).MoveToOuterDisposeScope();
    }
}

/// timm's TinyVitStage: PatchMerging downsample (NCHW), then TinyVitBlocks on BHWC.
public sealed class TinyVitStage : nn.Module<Tensor, Tensor>
{
    private PatchMerging downsample;
    private ModuleList<TinyVitBlock> blocks;

    public TinyVitStage(long dim, long outDim, long depth, long numHeads, long windowSize, double mlpRatio, long localConvSize, Device? device = null) : base(nameof(TinyVitStage))
    {
        downsample = new PatchMerging(dim, outDim, device);
        blocks = new ModuleList<TinyVitBlock>();
        for (var i = 0; i < depth; i++) blocks.Add(new TinyVitBlock(outDim, numHeads, windowSize, mlpRatio, localConvSize, device));
        RegisterComponents();
    }

    public IEnumerable<TinyVitBlock> Blocks => blocks;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = downsample.forward(x).permute(0, 2, 3, 1);
        foreach (var b in blocks) y = b.forward(y);
        return y.permute(0, 3, 1, 2).MoveToOuterDisposeScope();
    }
}

/// timm's TinyVit constructor arguments (the subset this zoo supports).
public sealed record TinyVitConfig(
    long in_chans = 3, long num_classes = 1000,
    long[]? embed_dims = null, long[]? depths = null, long[]? num_heads = null, long[]? window_sizes = null,
    double mlp_ratio = 4.0, double mbconv_expand_ratio = 4.0, long local_conv_size = 3)
{
    public long[] EmbedDims => embed_dims ?? new long[] { 96, 192, 384, 768 };
    public long[] Depths => depths ?? new long[] { 2, 2, 6, 2 };
    public long[] NumHeads => num_heads ?? new long[] { 3, 6, 12, 24 };
    public long[] WindowSizes => window_sizes ?? new long[] { 7, 7, 14, 7 };
}

/// timm's TinyVit: conv patch embedding, an MBConv stage, windowed-attention stages, norm head.
public sealed class TinyVit : nn.Module<Tensor, Tensor>, IHasModelCard
{
    public TinyVitConfig Config { get; }
    public ModelCard Card => ModelCard.Of(Config.in_chans, null, "head", ModelTask.Classification);
    private TinyVitPatchEmbed patch_embed;
    private ModuleList<nn.Module<Tensor, Tensor>> stages;
    private NormClassifierHead head;

    public TinyVit(TinyVitConfig config, Device? device = null) : base(nameof(TinyVit))
    {
        Config = config;
        (patch_embed, stages) = Trunk(config, device);
        head = new NormClassifierHead(config.EmbedDims[^1], config.num_classes, 1e-5, device);
        RegisterComponents();
    }

    /// The patch embedding and stages (shared with the SAM-style TinyViT image encoder).
    internal static (TinyVitPatchEmbed, ModuleList<nn.Module<Tensor, Tensor>>) Trunk(TinyVitConfig config, Device? device)
    {
        var dims = config.EmbedDims;
        var depths = config.Depths;
        if (new[] { depths.Length, config.NumHeads.Length, config.WindowSizes.Length }.Any(n => n != dims.Length) || dims.Length < 2)
            throw new ArgumentException($"TinyViT needs at least two stages and embed_dims, depths, num_heads, window_sizes of equal length (got {dims.Length}, {depths.Length}, {config.NumHeads.Length}, {config.WindowSizes.Length}).");
        var patchEmbed = new TinyVitPatchEmbed(config.in_chans, dims[0], device);
        var stages = new ModuleList<nn.Module<Tensor, Tensor>>();
        for (var i = 0; i < dims.Length; i++)
            stages.Add(i == 0
                ? new ConvLayer(dims[0], depths[0], config.mbconv_expand_ratio, device)
                : new TinyVitStage(dims[i - 1], dims[i], depths[i], config.NumHeads[i], config.WindowSizes[i], config.mlp_ratio, config.local_conv_size, device));
        return (patchEmbed, stages);
    }

    /// The transformer blocks of all attention stages (for adapters).
    public IEnumerable<TinyVitBlock> Blocks => stages.OfType<TinyVitStage>().SelectMany(s => s.Blocks);

    /// Final feature map [B, embed_dims[-1], H/32, W/32].
    public Tensor ForwardFeatures(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = patch_embed.forward(x);
        foreach (var s in stages) y = s.forward(y);
        return y.MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        using var f = ForwardFeatures(x);
        return head.forward(f);
    }
}

/// Named TinyViT configurations (timm's registered factory functions).
public static class TinyVitModels
{
    public static TinyVitConfig tiny_vit_5m_224 => new(embed_dims: new long[] { 64, 128, 160, 320 }, depths: new long[] { 2, 2, 6, 2 }, num_heads: new long[] { 2, 4, 5, 10 }, window_sizes: new long[] { 7, 7, 14, 7 });
    public static TinyVitConfig tiny_vit_11m_224 => new(embed_dims: new long[] { 64, 128, 256, 448 }, depths: new long[] { 2, 2, 6, 2 }, num_heads: new long[] { 2, 4, 8, 14 }, window_sizes: new long[] { 7, 7, 14, 7 });
    public static TinyVitConfig tiny_vit_21m_224 => new(embed_dims: new long[] { 96, 192, 384, 576 }, depths: new long[] { 2, 2, 6, 2 }, num_heads: new long[] { 3, 6, 12, 18 }, window_sizes: new long[] { 7, 7, 14, 7 });
}
