using Lora.Core.Training;
using Lora.Core.Tuning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

// A SAM-style promptable segmenter with segment-anything's parameter names: image_encoder (ViT with
// SAM's neck, or timm's TinyViT trunk with the same neck, as in MobileSAM), prompt_encoder (points
// and boxes) and mask_decoder (two-way transformer). Not implemented: mask prompts (the
// mask_downscaling weights exist so that checkpoints load, but Segment takes no mask input) and
// resizing of rel-pos tables to other input sizes.

/// segment-anything's MLPBlock: lin1 → activation → lin2.
public sealed class MLPBlock : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> lin1;
    private nn.Module<Tensor, Tensor> lin2;
    private readonly bool relu;

    public MLPBlock(long dim, long mlpDim, bool relu, Device? device = null) : base(nameof(MLPBlock))
    {
        lin1 = nn.Linear(dim, mlpDim, device: device);
        lin2 = nn.Linear(mlpDim, dim, device: device);
        this.relu = relu;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var h = lin1.forward(x);
        using var a = relu ? nn.functional.relu(h) : nn.functional.gelu(h);
        return lin2.forward(a);
    }
}

/// segment-anything's image-encoder Attention on BHWC tokens: fused qkv, optional decomposed
/// relative position biases (rel_pos_h, rel_pos_w: [2·size − 1, head_dim]), proj.
public sealed class SamEncoderAttention : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> qkv;
    private nn.Module<Tensor, Tensor> proj;
    private Parameter? rel_pos_h;
    private Parameter? rel_pos_w;
    private readonly long numHeads;

    /// inputSize: the token grid side this attention sees (the window, or the whole grid), for rel-pos.
    public SamEncoderAttention(long dim, long numHeads, bool qkvBias, bool useRelPos, long inputSize, Device? device = null) : base(nameof(SamEncoderAttention))
    {
        if (dim % numHeads != 0) throw new ArgumentException($"embed_dim {dim} must be divisible by num_heads {numHeads}.");
        this.numHeads = numHeads;
        qkv = nn.Linear(dim, 3 * dim, hasBias: qkvBias, device: device);
        proj = nn.Linear(dim, dim, device: device);
        if (useRelPos)
        {
            rel_pos_h = nn.Parameter(zeros(2 * inputSize - 1, dim / numHeads, device: device));
            rel_pos_w = nn.Parameter(zeros(2 * inputSize - 1, dim / numHeads, device: device));
        }
        RegisterComponents();
    }

    /// segment-anything's get_rel_pos for equal query and key sizes: rel[q - k + size - 1].
    private static Tensor RelPos(long size, Tensor table)
    {
        if (table.shape[0] != 2 * size - 1)
            throw new InvalidOperationException($"relative position table has {table.shape[0]} rows but the attention sees {size} tokens per side (needs {2 * size - 1}); the input size does not match the model's img_size/window_size.");
        // Scalars held in locals: a temporary one may be finalized by the GC while native code reads it.
        using Scalar n = size, offset = size - 1;
        using var q = arange(n, device: table.device).unsqueeze(1);
        using var k = arange(n, device: table.device).unsqueeze(0);
        using var diff = q - k;
        using var idx = diff.Plus(offset);
        return table.index(idx);
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape[3], hd = c / numHeads;
        var t = qkv.forward(x).reshape(b, h * w, 3, numHeads, hd).permute(2, 0, 3, 1, 4);
        var parts = t.unbind(0); // each [B, heads, HW, hd]
        var bias = RelBias(parts[0], b, h, w, hd);
        var o = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2], bias);
        return proj.forward(o.transpose(1, 2).reshape(b, h, w, c)).MoveToOuterDisposeScope();
    }

    /// Decomposed rel-pos (unscaled q of the h×w grid tokens against per-axis tables), added to the
    /// scaled logits: [B, heads, hw, hw]; null without rel-pos.
    private Tensor? RelBias(Tensor q, long b, long h, long w, long hd)
    {
        if (rel_pos_h is null || rel_pos_w is null) return null;
        var rq = q.reshape(b * numHeads, h, w, hd);
        var relH = einsum("bhwc,hkc->bhwk", rq, RelPos(h, rel_pos_h).to(rq.dtype));
        var relW = einsum("bhwc,wkc->bhwk", rq, RelPos(w, rel_pos_w).to(rq.dtype));
        return relH.unsqueeze(-1).Plus(relW.unsqueeze(-2)).reshape(b, numHeads, h * w, h * w);
    }

    /// VPT: the grid x [B, h, w, C] and prompt tokens p [B, n, C] attend over each other; the
    /// relative-position bias is between grid tokens only (prompts have no position: zero bias).
    public (Tensor X, Tensor P) ForwardPrompted(Tensor x, Tensor p)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape[3], hd = c / numHeads, l = h * w, n = p.shape[1];
        var t = qkv.forward(cat(new[] { x.reshape(b, l, c), p }, 1)).reshape(b, l + n, 3, numHeads, hd).permute(2, 0, 3, 1, 4);
        var parts = t.unbind(0);
        var bias = RelBias(parts[0].narrow(2, 0, l), b, h, w, hd);
        if (bias is not null) bias = nn.functional.pad(bias, new long[] { 0, n, 0, n });
        var o = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2], bias);
        var y = proj.forward(o.transpose(1, 2).reshape(b, l + n, c));
        return (y.narrow(1, 0, l).reshape(b, h, w, c).MoveToOuterDisposeScope(), y.narrow(1, l, n).MoveToOuterDisposeScope());
    }
}

/// segment-anything's image-encoder Block (BHWC): norm1, (windowed) attention, residual; norm2, mlp
/// (lin1/lin2), residual; with optional bottleneck adapters (IAdapterHost) and Convpass bypasses
/// on the whole BHWC grid beside the (windowed) attention and the MLP (IBypassHost).
public sealed class SamEncoderBlock : nn.Module<Tensor, Tensor>, IAdapterHost, IBypassHost
{
    private nn.Module<Tensor, Tensor> norm1;
    private SamEncoderAttention attn;
    private nn.Module<Tensor, Tensor> norm2;
    private MLPBlock mlp;
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

    public SamEncoderBlock(long dim, long numHeads, double mlpRatio, bool qkvBias, bool useRelPos, long windowSize, long gridSize, Device? device = null) : base(nameof(SamEncoderBlock))
    {
        norm1 = nn.LayerNorm(dim, 1e-6, device: device);
        attn = new SamEncoderAttention(dim, numHeads, qkvBias, useRelPos, windowSize > 0 ? windowSize : gridSize, device);
        norm2 = nn.LayerNorm(dim, 1e-6, device: device);
        mlp = new MLPBlock(dim, (long)(dim * mlpRatio), relu: false, device);
        this.windowSize = windowSize;
        this.dim = dim;
        RegisterComponents();
    }

    public void SetAdapters(nn.Module<Tensor, Tensor>? attnAdapter, nn.Module<Tensor, Tensor>? mlpAdapter, double mlpScale)
    {
        adapter_attn = AdapterSlot.Set(this, "adapter_attn", adapter_attn, attnAdapter);
        adapter_mlp = AdapterSlot.Set(this, "adapter_mlp", adapter_mlp, mlpAdapter);
        this.mlpScale.Dispose();
        this.mlpScale = mlpScale.ToScalar();
    }

    public long BypassDim => dim;

    public void SetBypasses(ConvpassModule? attn, ConvpassModule? mlp, double scale)
    {
        convpass_attn = (ConvpassModule?)AdapterSlot.Set(this, "convpass_attn", convpass_attn, attn);
        convpass_mlp = (ConvpassModule?)AdapterSlot.Set(this, "convpass_mlp", convpass_mlp, mlp);
        bypassScale.Dispose();
        bypassScale = scale.ToScalar();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return Run(x, null).X.MoveToOuterDisposeScope();
    }

    /// The block with VPT prompt tokens p [B, n, C] beside the grid: they attend with the grid (in a
    /// windowed block with every window, VPT's practice for windowed attention, their outputs then
    /// averaged over the windows) and go through the same norms and MLP; adapters and bypasses act
    /// on the grid only.
    public (Tensor X, Tensor P) ForwardPrompted(Tensor x, Tensor p)
    {
        using var scope = NewDisposeScope();
        var (y, q) = Run(x, p);
        return (y.MoveToOuterDisposeScope(), q!.MoveToOuterDisposeScope());
    }

    private (Tensor X, Tensor? P) Run(Tensor x, Tensor? p)
    {
        long b = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape[3], ws = windowSize;
        var n1 = norm1.forward(x);
        var y = n1;
        var np = p is null ? null : norm1.forward(p);
        Tensor? pa = null;
        if (ws > 0)
        {
            long padB = (ws - h % ws) % ws, padR = (ws - w % ws) % ws, ph = h + padB, pw = w + padR;
            if (padB > 0 || padR > 0) y = nn.functional.pad(y, new long[] { 0, 0, 0, padR, 0, padB });
            y = y.view(b, ph / ws, ws, pw / ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c);
            if (np is null) y = attn.forward(y);
            else
            {
                long windows = y.shape[0] / b, tokens = np.shape[1];
                var (yw, pWin) = attn.ForwardPrompted(y, np.unsqueeze(1).expand(b, windows, tokens, c).reshape(b * windows, tokens, c));
                y = yw;
                pa = pWin.view(b, windows, tokens, c).mean(new long[] { 1 });
            }
            y = y.view(b, ph / ws, pw / ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c);
            if (padB > 0 || padR > 0) y = y.index(TensorIndex.Colon, TensorIndex.Slice(0, h), TensorIndex.Slice(0, w)).contiguous();
        }
        else if (np is null) y = attn.forward(y);
        else (y, pa) = attn.ForwardPrompted(y, np);
        if (p is not null)
        {
            p = p.Plus(pa!);
            p = p.Plus(mlp.forward(norm2.forward(p)));
        }
        x = x.Plus(y);
        if (convpass_attn is not null) x = x.Plus(convpass_attn.forward(n1) * bypassScale);
        if (adapter_attn is not null) x = x.Plus(adapter_attn.forward(x));
        var n = norm2.forward(x);
        x = x.Plus(mlp.forward(n));
        if (convpass_mlp is not null) x = x.Plus(convpass_mlp.forward(n) * bypassScale);
        if (adapter_mlp is not null) x = x.Plus(adapter_mlp.forward(n) * mlpScale);
        return (x, p);
    }
}

/// SAM's neck: 1×1 conv → LayerNorm2d → 3×3 conv → LayerNorm2d (keys neck.0 … neck.3).
internal static class SamNeck
{
    public static nn.Module<Tensor, Tensor> Create(long inChs, long outChs, Device? device) => nn.Sequential(
        nn.Conv2d(inChs, outChs, 1, bias: false, device: device),
        new LayerNorm2d(outChs, 1e-6, device),
        nn.Conv2d(outChs, outChs, 3, padding: 1, bias: false, device: device),
        new LayerNorm2d(outChs, 1e-6, device));
}

/// segment-anything's ImageEncoderViT: patch_embed, absolute pos_embed [1, H/p, W/p, C], blocks
/// (windowed except global_attn_indexes), neck. Output [B, out_chans, H/p, W/p]. Takes VPT prompts
/// (IPromptHost) beside the token grid, dropped before the neck.
public sealed class ImageEncoderViT : nn.Module<Tensor, Tensor>, IPromptHost
{
    private PatchEmbed patch_embed;
    private Parameter pos_embed;
    private ModuleList<SamEncoderBlock> blocks;
    private nn.Module<Tensor, Tensor> neck;
    // VPT's prompt tokens, registered as "prompt" while set
    private VisualPrompts? prompt;
    private readonly (long, int, long) promptShape;

    public ImageEncoderViT(SamConfig c, Device? device = null) : base(nameof(ImageEncoderViT))
    {
        if (c.img_size % c.patch_size != 0) throw new ArgumentException($"img_size {c.img_size} must be a multiple of patch_size {c.patch_size}.");
        patch_embed = new PatchEmbed(c.patch_size, c.in_chans, c.embed_dim, device);
        var g = c.img_size / c.patch_size;
        pos_embed = nn.Parameter(zeros(1, g, g, c.embed_dim, device: device));
        blocks = new ModuleList<SamEncoderBlock>();
        var global = c.GlobalAttnIndexes.ToHashSet();
        for (var i = 0; i < c.depth; i++)
            blocks.Add(new SamEncoderBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias, c.use_rel_pos, global.Contains(i) ? 0 : c.window_size, g, device));
        neck = SamNeck.Create(c.embed_dim, c.out_chans, device);
        promptShape = (c.embed_dim, (int)c.depth, c.patch_size * c.patch_size);
        RegisterComponents();
        Init.TruncNormal(pos_embed, 0.02, device);
    }

    public (long Dim, int Depth, long PatchArea) PromptShape => promptShape;

    public void SetPrompts(VisualPrompts? prompts)
    {
        if (prompt is not null) register_module("prompt", null!);
        if (prompts is not null) register_module("prompt", prompts);
        prompt = prompts;
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var t = patch_embed.forward(x); // [B, N, C]
        long b = t.shape[0], g = pos_embed.shape[1];
        var y = t.view(b, g, g, -1).Plus(pos_embed.to(t.dtype)); // float32 under bf16 training (non-leaf)
        if (prompt is null)
            foreach (var blk in blocks) y = blk.forward(y);
        else
        {
            // VPT: prompts beside the grid (no position embedding, as the paper's); deep VPT replaces them before each later block
            var p = prompt.At(0, b, y.dtype);
            var i = 0;
            foreach (var blk in blocks)
            {
                if (i > 0 && prompt.Deep) p = prompt.At(i, b, y.dtype);
                (y, p) = blk.ForwardPrompted(y, p);
                i++;
            }
        }
        return neck.forward(y.permute(0, 3, 1, 2)).MoveToOuterDisposeScope();
    }
}

/// timm's TinyViT trunk (patch_embed, stages) with SAM's neck, as MobileSAM's image encoder.
/// Output [B, out_chans, H/32, W/32].
public sealed class ImageEncoderTinyViT : nn.Module<Tensor, Tensor>
{
    private TinyVitPatchEmbed patch_embed;
    private ModuleList<nn.Module<Tensor, Tensor>> stages;
    private nn.Module<Tensor, Tensor> neck;

    public ImageEncoderTinyViT(SamConfig c, Device? device = null) : base(nameof(ImageEncoderTinyViT))
    {
        var cfg = new TinyVitConfig(in_chans: c.in_chans, num_classes: 0, embed_dims: c.EmbedDims, depths: c.Depths,
            num_heads: c.NumHeadsPerStage, window_sizes: c.WindowSizes, mlp_ratio: c.mlp_ratio);
        (patch_embed, stages) = TinyVit.Trunk(cfg, device);
        neck = SamNeck.Create(c.EmbedDims[^1], c.out_chans, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = patch_embed.forward(x);
        foreach (var s in stages) y = s.forward(y);
        return neck.forward(y).MoveToOuterDisposeScope();
    }
}

/// segment-anything's PositionEmbeddingRandom: random Fourier features of normalised coordinates.
public sealed class PositionEmbeddingRandom : nn.Module<long, long, Tensor>
{
    private Tensor positional_encoding_gaussian_matrix;

    public PositionEmbeddingRandom(long numPosFeats, double scale = 1.0, Device? device = null) : base(nameof(PositionEmbeddingRandom))
    {
        using var s = scale.ToScalar();
        positional_encoding_gaussian_matrix = Init.IsMeta(device) ? empty(2, numPosFeats, device: device) : randn(2, numPosFeats, device: device) * s;
        RegisterComponents(); // a buffer (persistent, as in segment-anything)
    }

    // Numbers in tensor ops are held as Scalars: a temporary one (from `t * 2`) may be finalized by
    // the GC while the native op still reads it.
    static readonly Scalar Two = 2.ToScalar(), One = 1.ToScalar(), TwoPi = (2 * Math.PI).ToScalar(), Half = 0.5.ToScalar();

    private Tensor Encode(Tensor coords)
    {
        using var scope = NewDisposeScope();
        var c = (coords * Two - One).matmul(positional_encoding_gaussian_matrix) * TwoPi;
        return cat(new[] { c.sin(), c.cos() }, -1).MoveToOuterDisposeScope();
    }

    /// Dense encoding of an h×w grid: [C, h, w].
    public override Tensor forward(long h, long w)
    {
        using var scope = NewDisposeScope();
        var dev = positional_encoding_gaussian_matrix.device;
        var grid = ones(h, w, device: dev);
        using Scalar hs = h, ws = w;
        var y = (grid.cumsum(0) - Half) / hs;
        var x = (grid.cumsum(1) - Half) / ws;
        return Encode(stack(new[] { x, y }, -1)).permute(2, 0, 1).MoveToOuterDisposeScope();
    }

    /// Encoding of pixel coordinates (x, y) in an image of size (h, w): [..., C].
    public Tensor ForwardWithCoords(Tensor coords, long h, long w)
    {
        using var scope = NewDisposeScope();
        var scaleXY = tensor(new float[] { 1f / w, 1f / h }, device: coords.device);
        return Encode(coords.to_type(ScalarType.Float32) * scaleXY).MoveToOuterDisposeScope();
    }
}

/// segment-anything's PromptEncoder for points and boxes.
public sealed class PromptEncoder : nn.Module
{
    private PositionEmbeddingRandom pe_layer;
    private ModuleList<Embedding> point_embeddings;
    private Embedding not_a_point_embed;
    private nn.Module<Tensor, Tensor> mask_downscaling;
    private Embedding no_mask_embed;
    private readonly long embedDim, gridH, gridW, imgH, imgW;
    // Point labels and the pixel-centre offset, held as Scalars: a temporary one (from `t + 0.5`)
    // may be finalized by the GC while the native op still reads it.
    static readonly Scalar Padding = (-1L).ToScalar(), Background = 0.ToScalar(), Foreground = 1.ToScalar(), Half = 0.5.ToScalar();

    public PromptEncoder(long embedDim, long gridSize, long imgSize, long maskInChans = 16, Device? device = null) : base(nameof(PromptEncoder))
    {
        this.embedDim = embedDim;
        gridH = gridW = gridSize;
        imgH = imgW = imgSize;
        pe_layer = new PositionEmbeddingRandom(embedDim / 2, 1.0, device);
        point_embeddings = new ModuleList<Embedding>();
        for (var i = 0; i < 4; i++) point_embeddings.Add(nn.Embedding(1, embedDim, device: device));
        not_a_point_embed = nn.Embedding(1, embedDim, device: device);
        mask_downscaling = nn.Sequential(
            nn.Conv2d(1, maskInChans / 4, 2, stride: 2, device: device), new LayerNorm2d(maskInChans / 4, 1e-6, device), nn.GELU(),
            nn.Conv2d(maskInChans / 4, maskInChans, 2, stride: 2, device: device), new LayerNorm2d(maskInChans, 1e-6, device), nn.GELU(),
            nn.Conv2d(maskInChans, embedDim, 1, device: device));
        no_mask_embed = nn.Embedding(1, embedDim, device: device);
        RegisterComponents();
    }

    /// Positional encoding of the image embedding grid: [1, C, h, w].
    public Tensor DensePe() { using var pe = pe_layer.forward(gridH, gridW); return pe.unsqueeze(0); }

    /// Sparse [B, n, C] and dense [B, C, h, w] prompt embeddings. points [B,P,2] with labels [B,P]
    /// (1 foreground, 0 background, -1 padding); boxes [B,4] (x0,y0,x1,y1); coordinates in pixels
    /// of the encoder's input size.
    public (Tensor Sparse, Tensor Dense) Encode(long batch, Tensor? points, Tensor? labels, Tensor? boxes)
    {
        using var scope = NewDisposeScope();
        var dev = no_mask_embed.weight!.device;
        var parts = new List<Tensor>();
        if (points is not null)
        {
            if (labels is null) throw new ArgumentException("Point prompts need pointLabels ([N, P], 1 foreground, 0 background).");
            var p = points.to(dev).to_type(ScalarType.Float32).Plus(Half);
            var l = labels.to(dev).to_type(ScalarType.Int64);
            if (boxes is null)
            {
                // segment-anything pads with a "not a point" when there is no box
                p = cat(new[] { p, zeros(p.shape[0], 1, 2, device: dev) }, 1);
                l = cat(new[] { l, full(l.shape[0], 1, Padding, ScalarType.Int64, device: dev) }, 1);
            }
            var e = pe_layer.ForwardWithCoords(p, imgH, imgW);
            var lf = l.unsqueeze(-1);
            e = where(lf == Padding, zeros_like(e), e);
            e = e.Plus((lf == Padding).to_type(ScalarType.Float32) * not_a_point_embed.weight!);
            e = e.Plus((lf == Background).to_type(ScalarType.Float32) * point_embeddings[0].weight!);
            e = e.Plus((lf == Foreground).to_type(ScalarType.Float32) * point_embeddings[1].weight!);
            parts.Add(e);
        }
        if (boxes is not null)
        {
            var corners = boxes.to(dev).to_type(ScalarType.Float32).Plus(Half).reshape(-1, 2, 2);
            var e = pe_layer.ForwardWithCoords(corners, imgH, imgW);
            var add = cat(new[] { point_embeddings[2].weight!, point_embeddings[3].weight! }, 0).unsqueeze(0);
            parts.Add(e.Plus(add));
        }
        var sparse = parts.Count > 0 ? cat(parts.ToArray(), 1) : empty(batch, 0, embedDim, device: dev);
        var dense = no_mask_embed.weight!.reshape(1, -1, 1, 1).expand(batch, -1, gridH, gridW);
        return (sparse.MoveToOuterDisposeScope(), dense.MoveToOuterDisposeScope());
    }
}

/// segment-anything's decoder Attention: q/k/v projections to embedding_dim / downsample_rate, out_proj.
public sealed class SamAttention : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> q_proj;
    private nn.Module<Tensor, Tensor> k_proj;
    private nn.Module<Tensor, Tensor> v_proj;
    private nn.Module<Tensor, Tensor> out_proj;
    private readonly long numHeads, internalDim;

    public SamAttention(long dim, long numHeads, long downsampleRate = 1, Device? device = null) : base(nameof(SamAttention))
    {
        internalDim = dim / downsampleRate;
        if (internalDim % numHeads != 0) throw new ArgumentException($"decoder attention width {internalDim} must be divisible by num_heads {numHeads}.");
        this.numHeads = numHeads;
        q_proj = nn.Linear(dim, internalDim, device: device);
        k_proj = nn.Linear(dim, internalDim, device: device);
        v_proj = nn.Linear(dim, internalDim, device: device);
        out_proj = nn.Linear(internalDim, dim, device: device);
        RegisterComponents();
    }

    private Tensor Split(Tensor x) => x.reshape(x.shape[0], x.shape[1], numHeads, -1).transpose(1, 2);

    public override Tensor forward(Tensor q, Tensor k, Tensor v)
    {
        using var scope = NewDisposeScope();
        var o = nn.functional.scaled_dot_product_attention(Split(q_proj.forward(q)), Split(k_proj.forward(k)), Split(v_proj.forward(v)));
        o = o.transpose(1, 2).reshape(q.shape[0], q.shape[1], internalDim);
        return out_proj.forward(o).MoveToOuterDisposeScope();
    }
}

/// segment-anything's TwoWayAttentionBlock: token self-attention, token→image cross-attention,
/// MLP on tokens, image→token cross-attention.
public sealed class TwoWayAttentionBlock : nn.Module
{
    private SamAttention self_attn;
    private nn.Module<Tensor, Tensor> norm1;
    private SamAttention cross_attn_token_to_image;
    private nn.Module<Tensor, Tensor> norm2;
    private MLPBlock mlp;
    private nn.Module<Tensor, Tensor> norm3;
    private nn.Module<Tensor, Tensor> norm4;
    private SamAttention cross_attn_image_to_token;
    private readonly bool skipFirstLayerPe;

    public TwoWayAttentionBlock(long dim, long numHeads, long mlpDim, long downsampleRate, bool skipFirstLayerPe, Device? device = null) : base(nameof(TwoWayAttentionBlock))
    {
        self_attn = new SamAttention(dim, numHeads, 1, device);
        norm1 = nn.LayerNorm(dim, device: device);
        cross_attn_token_to_image = new SamAttention(dim, numHeads, downsampleRate, device);
        norm2 = nn.LayerNorm(dim, device: device);
        mlp = new MLPBlock(dim, mlpDim, relu: true, device);
        norm3 = nn.LayerNorm(dim, device: device);
        norm4 = nn.LayerNorm(dim, device: device);
        cross_attn_image_to_token = new SamAttention(dim, numHeads, downsampleRate, device);
        this.skipFirstLayerPe = skipFirstLayerPe;
        RegisterComponents();
    }

    public (Tensor Queries, Tensor Keys) Forward(Tensor queries, Tensor keys, Tensor queryPe, Tensor keyPe)
    {
        using var scope = NewDisposeScope();
        if (skipFirstLayerPe) queries = self_attn.forward(queries, queries, queries);
        else { var q0 = queries.Plus(queryPe); queries = queries.Plus(self_attn.forward(q0, q0, queries)); }
        queries = norm1.forward(queries);
        var q = queries.Plus(queryPe);
        var k = keys.Plus(keyPe);
        queries = norm2.forward(queries.Plus(cross_attn_token_to_image.forward(q, k, keys)));
        queries = norm3.forward(queries.Plus(mlp.forward(queries)));
        q = queries.Plus(queryPe);
        keys = norm4.forward(keys.Plus(cross_attn_image_to_token.forward(k, q, queries)));
        return (queries.MoveToOuterDisposeScope(), keys.MoveToOuterDisposeScope());
    }
}

/// segment-anything's TwoWayTransformer.
public sealed class TwoWayTransformer : nn.Module
{
    private ModuleList<TwoWayAttentionBlock> layers;
    private SamAttention final_attn_token_to_image;
    private nn.Module<Tensor, Tensor> norm_final_attn;

    public TwoWayTransformer(long depth, long dim, long numHeads, long mlpDim, long downsampleRate = 2, Device? device = null) : base(nameof(TwoWayTransformer))
    {
        layers = new ModuleList<TwoWayAttentionBlock>();
        for (var i = 0; i < depth; i++) layers.Add(new TwoWayAttentionBlock(dim, numHeads, mlpDim, downsampleRate, i == 0, device));
        final_attn_token_to_image = new SamAttention(dim, numHeads, downsampleRate, device);
        norm_final_attn = nn.LayerNorm(dim, device: device);
        RegisterComponents();
    }

    /// image [B, C, h, w], imagePe [B, C, h, w], tokens [B, T, C] → (tokens, image tokens [B, hw, C]).
    public (Tensor Queries, Tensor Keys) Forward(Tensor image, Tensor imagePe, Tensor tokens)
    {
        using var scope = NewDisposeScope();
        var keys = image.flatten(2).permute(0, 2, 1);
        var keyPe = imagePe.flatten(2).permute(0, 2, 1);
        var queries = tokens;
        foreach (var layer in layers) (queries, keys) = layer.Forward(queries, keys, tokens, keyPe);
        var q = queries.Plus(tokens);
        var k = keys.Plus(keyPe);
        queries = norm_final_attn.forward(queries.Plus(final_attn_token_to_image.forward(q, k, keys)));
        return (queries.MoveToOuterDisposeScope(), keys.MoveToOuterDisposeScope());
    }
}

/// segment-anything's MLP (ReLU between layers), keys layers.0 … layers.N-1.
public sealed class SamMLP : nn.Module<Tensor, Tensor>
{
    private ModuleList<nn.Module<Tensor, Tensor>> layers;

    public SamMLP(long inDim, long hiddenDim, long outDim, long numLayers, Device? device = null) : base(nameof(SamMLP))
    {
        layers = new ModuleList<nn.Module<Tensor, Tensor>>();
        for (var i = 0; i < numLayers; i++)
            layers.Add(nn.Linear(i == 0 ? inDim : hiddenDim, i == numLayers - 1 ? outDim : hiddenDim, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        for (var i = 0; i < layers.Count; i++)
        {
            x = layers[i].forward(x);
            if (i < layers.Count - 1) x = nn.functional.relu(x);
        }
        return x.MoveToOuterDisposeScope();
    }
}

/// segment-anything's MaskDecoder (3 multimask outputs + 1 single-mask output, IoU head).
public sealed class MaskDecoder : nn.Module
{
    private TwoWayTransformer transformer;
    private Embedding iou_token;
    private Embedding mask_tokens;
    private nn.Module<Tensor, Tensor> output_upscaling;
    private ModuleList<SamMLP> output_hypernetworks_mlps;
    private SamMLP iou_prediction_head;
    private readonly long numMaskTokens;

    public MaskDecoder(long dim, long depth, long numHeads, long mlpDim, long numMultimaskOutputs = 3, long iouHeadDepth = 3, long iouHeadHiddenDim = 256, Device? device = null) : base(nameof(MaskDecoder))
    {
        if (dim % 8 != 0) throw new ArgumentException($"SAM's mask decoder needs a width divisible by 8 (got out_chans {dim}).");
        numMaskTokens = numMultimaskOutputs + 1;
        transformer = new TwoWayTransformer(depth, dim, numHeads, mlpDim, 2, device);
        iou_token = nn.Embedding(1, dim, device: device);
        mask_tokens = nn.Embedding(numMaskTokens, dim, device: device);
        output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim / 4, 2, stride: 2, device: device), new LayerNorm2d(dim / 4, 1e-6, device), nn.GELU(),
            nn.ConvTranspose2d(dim / 4, dim / 8, 2, stride: 2, device: device), nn.GELU());
        output_hypernetworks_mlps = new ModuleList<SamMLP>();
        for (var i = 0; i < numMaskTokens; i++) output_hypernetworks_mlps.Add(new SamMLP(dim, dim, dim / 8, 3, device));
        iou_prediction_head = new SamMLP(dim, iouHeadHiddenDim, numMaskTokens, iouHeadDepth, device);
        RegisterComponents();
    }

    /// Low-resolution mask logits [B, 4, 4h, 4w] (index 0: the single-mask output) and IoU predictions [B, 4].
    public (Tensor Masks, Tensor Iou) Forward(Tensor image, Tensor imagePe, Tensor sparse, Tensor dense)
    {
        using var scope = NewDisposeScope();
        long b = image.shape[0];
        var output = cat(new[] { iou_token.weight!, mask_tokens.weight! }, 0).unsqueeze(0).expand(b, -1, -1);
        var tokens = cat(new[] { output, sparse }, 1);
        var src = image.Plus(dense);
        var pos = imagePe.expand(b, -1, -1, -1);
        var (hs, keys) = transformer.Forward(src, pos, tokens);
        var iouOut = hs.select(1, 0);
        long c = image.shape[1], h = image.shape[2], w = image.shape[3];
        var up = output_upscaling.forward(keys.transpose(1, 2).reshape(b, c, h, w));
        var hyper = stack(Enumerable.Range(0, (int)numMaskTokens).Select(i => output_hypernetworks_mlps[i].forward(hs.select(1, 1 + i))).ToArray(), 1);
        long uc = up.shape[1], uh = up.shape[2], uw = up.shape[3];
        var masks = hyper.matmul(up.view(b, uc, uh * uw)).view(b, -1, uh, uw);
        var iou = iou_prediction_head.forward(iouOut);
        return (masks.MoveToOuterDisposeScope(), iou.MoveToOuterDisposeScope());
    }
}

/// Constructor arguments of the SAM-style segmenter (segment-anything's build_sam arguments, plus
/// timm TinyViT's for the tiny_vit encoder).
public sealed record SamConfig(
    string encoder = "vit", long img_size = 1024, long in_chans = 3,
    long patch_size = 16, long embed_dim = 768, long depth = 12, long num_heads = 12, double mlp_ratio = 4.0,
    bool qkv_bias = true, bool use_rel_pos = true, long window_size = 14, long[]? global_attn_indexes = null,
    long[]? embed_dims = null, long[]? depths = null, long[]? stage_num_heads = null, long[]? window_sizes = null,
    long out_chans = 256, long decoder_depth = 2, long decoder_num_heads = 8, long decoder_mlp_dim = 2048,
    long iou_head_hidden_dim = 256, long mask_in_chans = 16)
{
    public long[] GlobalAttnIndexes => global_attn_indexes ?? new long[] { 2, 5, 8, 11 };
    public long[] EmbedDims => embed_dims ?? new long[] { 64, 128, 160, 320 };
    public long[] Depths => depths ?? new long[] { 2, 2, 6, 2 };
    public long[] NumHeadsPerStage => stage_num_heads ?? new long[] { 2, 4, 5, 10 };
    public long[] WindowSizes => window_sizes ?? new long[] { 7, 7, 14, 7 };
    /// The image embedding's grid size (encoder stride: the patch size for ViT, 32 for timm's TinyViT).
    public long GridSize => encoder switch
    {
        "tiny_vit" => Strided(img_size, 5),
        // stem /4, then halved into every stage but the last
        "mobile_sam" => Strided(img_size, 2 + Math.Max(0, EmbedDims.Length - 2)),
        _ => img_size / patch_size,
    };

    // output side of `halvings` stride-2 convs with kernel 3, padding 1 (each ceil(n / 2))
    private static long Strided(long n, int halvings) { for (var i = 0; i < halvings; i++) n = (n + 1) / 2; return n; }
}

/// A SAM-style promptable segmenter: image_encoder, prompt_encoder, mask_decoder with
/// segment-anything's keys. As a Module it segments images with no prompt.
public sealed class Sam : nn.Module<Tensor, Tensor>, IPromptableSegmenter, IHasModelCard
{
    public SamConfig Config { get; }
    /// SAM resizes to its own input size itself: no fixed size for the data.
    public ModelCard Card => ModelCard.Of(Config.in_chans, null, "mask_decoder", ModelTask.Segmentation, Config.encoder == "vit" ? "ViT" : "TinyViT");
    private nn.Module<Tensor, Tensor> image_encoder;
    private PromptEncoder prompt_encoder;
    private MaskDecoder mask_decoder;

    public Sam(SamConfig c, Device? device = null) : base(nameof(Sam))
    {
        Config = c;
        image_encoder = c.encoder switch
        {
            "vit" => new ImageEncoderViT(c, device),
            "tiny_vit" => new ImageEncoderTinyViT(c, device),
            "mobile_sam" => new ImageEncoderMobileSam(c, device),
            _ => throw new ArgumentException($"Unknown SAM image encoder '{c.encoder}': use \"vit\", \"tiny_vit\" or \"mobile_sam\"."),
        };
        prompt_encoder = new PromptEncoder(c.out_chans, c.GridSize, c.img_size, c.mask_in_chans, device);
        mask_decoder = new MaskDecoder(c.out_chans, c.decoder_depth, c.decoder_num_heads, c.decoder_mlp_dim, 3, 3, c.iou_head_hidden_dim, device);
        RegisterComponents();
        Init.ConvAndLinear(image_encoder, device);
    }

    /// The adapter-capable blocks of the image encoder.
    public IEnumerable<IAdapterHost> EncoderBlocks => image_encoder.modules().OfType<IAdapterHost>();

    public Tensor Segment(Tensor images, Tensor? boxes, Tensor? points, Tensor? pointLabels)
    {
        using var scope = NewDisposeScope();
        long n = images.shape[0], h = images.shape[2], w = images.shape[3], s = Config.img_size;
        var x = images;
        if (h != s || w != s)
        {
            // the encoder has a fixed input size: resize, and map prompts into the resized frame
            x = nn.functional.interpolate(images, new[] { s, s }, mode: InterpolationMode.Bilinear, align_corners: false);
            var sxy = tensor(new float[] { (float)s / w, (float)s / h }, device: images.device);
            if (points is not null) points = points.to_type(ScalarType.Float32) * sxy;
            if (boxes is not null) boxes = boxes.to_type(ScalarType.Float32) * sxy.repeat(2);
        }
        var emb = image_encoder.forward(x);
        var (sparse, dense) = prompt_encoder.Encode(n, points, pointLabels, boxes);
        // prompts are encoded from float32 coordinates; under bf16 training the decoder computes in
        // the image embedding's dtype
        var pe = prompt_encoder.DensePe().to(emb.dtype);
        var (masks, _) = mask_decoder.Forward(emb, pe, sparse.to(emb.dtype), dense.to(emb.dtype));
        var single = masks.narrow(1, 0, 1);
        return nn.functional.interpolate(single, new[] { h, w }, mode: InterpolationMode.Bilinear, align_corners: false)
            .MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor images) => Segment(images, null, null, null);
}

/// Named SAM configurations.
public static class SamModels
{
    /// segment-anything's vit_b image encoder with the standard prompt encoder and mask decoder.
    public static SamConfig sam_vit_b => new();
    public static SamConfig sam_vit_l => new(embed_dim: 1024, depth: 24, num_heads: 16, global_attn_indexes: new long[] { 5, 11, 17, 23 });
    public static SamConfig sam_vit_h => new(embed_dim: 1280, depth: 32, num_heads: 16, global_attn_indexes: new long[] { 7, 15, 23, 31 });
    /// EfficientSAM-like ViT-Small encoder (SAM's layout and keys, not EfficientSAM's).
    public static SamConfig sam_vit_s => new(embed_dim: 384, depth: 12, num_heads: 6);
    /// MobileSAM-like: timm's tiny_vit_5m trunk with SAM's neck (stride 32, not MobileSAM's 16).
    public static SamConfig sam_tiny_vit => new(encoder: "tiny_vit");
    /// MobileSAM: its TinyViT-5M encoder with MobileSAM's key names, stride 16.
    public static SamConfig mobile_sam => new(encoder: "mobile_sam");
}
