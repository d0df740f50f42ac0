using Lora.Core.Training;
using Lora.Core.Tuning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// timm's PatchEmbed: a conv with kernel = stride = patch size, flattened to tokens [B, N, C].
public sealed class PatchEmbed : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> proj;

    public PatchEmbed(long patchSize, long inChans, long embedDim, Device? device = null) : base(nameof(PatchEmbed))
    {
        proj = nn.Conv2d(inChans, embedDim, patchSize, stride: patchSize, device: device);
        RegisterComponents();
    }

    /// The dtype of the projection weight (bf16 when it is frozen under bf16 training).
    public ScalarType WeightType => proj.parameters().First().dtype;

    public override Tensor forward(Tensor x)
    {
        using var y = proj.forward(x);
        return y.flatten(2).transpose(1, 2);
    }
}

/// timm's ViT Attention: fused qkv Linear, scaled_dot_product_attention, output proj.
public sealed class Attention : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> qkv;
    private nn.Module<Tensor, Tensor> proj;
    private readonly long numHeads;

    public Attention(long dim, long numHeads, bool qkvBias, Device? device = null) : base(nameof(Attention))
    {
        if (dim % numHeads != 0) throw new ArgumentException($"embed_dim {dim} must be divisible by num_heads {numHeads}.");
        this.numHeads = numHeads;
        qkv = nn.Linear(dim, dim * 3, hasBias: qkvBias, device: device);
        proj = nn.Linear(dim, dim, device: device);
        RegisterComponents();
    }

    internal void InitTimm(Device? device) { Init.Linear(qkv, device); Init.Linear(proj, device); }

    /// Attention heads (ONNX export rebuilds the head split).
    internal long NumHeads => numHeads;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], n = x.shape[1], c = x.shape[2];
        var t = qkv.forward(x).reshape(b, n, 3, numHeads, c / numHeads).permute(2, 0, 3, 1, 4);
        var parts = t.unbind(0);
        var o = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2]);
        var y = proj.forward(o.transpose(1, 2).reshape(b, n, c));
        return y.MoveToOuterDisposeScope();
    }
}

/// timm's pre-norm transformer Block, with optional bottleneck adapters (IAdapterHost) and
/// Convpass bypasses (IBypassHost).
public sealed class Block : nn.Module<Tensor, Tensor>, IAdapterHost, IBypassHost
{
    private nn.Module<Tensor, Tensor> norm1;
    private Attention attn;
    private nn.Module<Tensor, Tensor> norm2;
    private Mlp mlp;
    private nn.Module<Tensor, Tensor>? adapter_attn;
    private nn.Module<Tensor, Tensor>? adapter_mlp;
    // Held as a Scalar: a temporary one (from `t * 0.5`) may be finalized by the GC while the
    // native op still reads it.
    private Scalar mlpScale = 1.0.ToScalar();
    private ConvpassModule? convpass_attn;
    private ConvpassModule? convpass_mlp;
    private Scalar bypassScale = 1.0.ToScalar();
    private readonly long dim;

    /// The patch grid's side (the last side² tokens of the sequence), set by the VisionTransformer;
    /// 0: inferred from a [cls, patches] sequence.
    internal long GridSide { get; set; }

    public Block(long dim, long numHeads, double mlpRatio, bool qkvBias, double eps = 1e-6, Device? device = null) : base(nameof(Block))
    {
        norm1 = nn.LayerNorm(dim, eps, device: device);
        attn = new Attention(dim, numHeads, qkvBias, device);
        norm2 = nn.LayerNorm(dim, eps, device: device);
        mlp = new Mlp(dim, (long)(dim * mlpRatio), dim, device);
        this.dim = dim;
        RegisterComponents();
    }

    internal void InitTimm(Device? device) { attn.InitTimm(device); mlp.InitTimm(device); }

    public long BypassDim => dim;

    public void SetBypasses(ConvpassModule? attn, ConvpassModule? mlp, double scale)
    {
        convpass_attn = (ConvpassModule?)AdapterSlot.Set(this, "convpass_attn", convpass_attn, attn);
        convpass_mlp = (ConvpassModule?)AdapterSlot.Set(this, "convpass_mlp", convpass_mlp, mlp);
        bypassScale.Dispose();
        bypassScale = scale.ToScalar();
        BypassScale = scale;
    }

    /// s, the Convpass bypasses' scale (ONNX export writes it as a constant).
    public double BypassScale { get; private set; } = 1.0;

    Tensor Bypass(ConvpassModule bypass, Tensor n)
    {
        var side = GridSide > 0 ? GridSide : (long)Math.Round(Math.Sqrt(n.shape[1] - 1));
        return bypass.ForwardTokens(n, side, side) * bypassScale;
    }

    public void SetAdapters(nn.Module<Tensor, Tensor>? attnAdapter, nn.Module<Tensor, Tensor>? mlpAdapter, double mlpScale)
    {
        adapter_attn = AdapterSlot.Set(this, "adapter_attn", adapter_attn, attnAdapter);
        adapter_mlp = AdapterSlot.Set(this, "adapter_mlp", adapter_mlp, mlpAdapter);
        this.mlpScale.Dispose();
        this.mlpScale = mlpScale.ToScalar();
        MlpAdapterScale = mlpScale;
    }

    /// The scale of the MLP-side adapter's output (ONNX export writes it as a constant).
    public double MlpAdapterScale { get; private set; } = 1.0;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var n1 = norm1.forward(x);
        x = x.Plus(attn.forward(n1));
        if (convpass_attn is not null) x = x.Plus(Bypass(convpass_attn, n1));
        if (adapter_attn is not null) x = x.Plus(adapter_attn.forward(x));
        var n = norm2.forward(x);
        x = x.Plus(mlp.forward(n));
        if (convpass_mlp is not null) x = x.Plus(Bypass(convpass_mlp, n));
        if (adapter_mlp is not null) x = x.Plus(adapter_mlp.forward(n) * mlpScale);
        return x.MoveToOuterDisposeScope();
    }
}

/// timm's VisionTransformer constructor arguments (the subset this zoo supports).
public sealed record VitConfig(
    long img_size = 224, long patch_size = 16, long in_chans = 3, long num_classes = 1000,
    long embed_dim = 768, long depth = 12, long num_heads = 12, double mlp_ratio = 4.0, bool qkv_bias = true)
{
    public long NumPatches => (img_size / patch_size) * (img_size / patch_size);
}

/// timm's VisionTransformer (class token, learned position embedding, pre-norm blocks, token pooling).
public sealed class VisionTransformer : nn.Module<Tensor, Tensor>, IHasModelCard, IPromptHost
{
    public VitConfig Config { get; }
    public ModelCard Card => ModelCard.Of(Config.in_chans, Config.img_size, "head", ModelTask.Classification);
    private PatchEmbed patch_embed;
    private Parameter cls_token;
    private Parameter pos_embed;
    private ModuleList<Block> blocks;
    private nn.Module<Tensor, Tensor> norm;
    private nn.Module<Tensor, Tensor> head;
    // VPT's prompt tokens (IPromptHost), registered as "prompt" while set
    private VisualPrompts? prompt;

    public VisionTransformer(VitConfig config, Device? device = null) : base(nameof(VisionTransformer))
    {
        if (config.img_size % config.patch_size != 0)
            throw new ArgumentException($"img_size {config.img_size} must be a multiple of patch_size {config.patch_size}.");
        Config = config;
        patch_embed = new PatchEmbed(config.patch_size, config.in_chans, config.embed_dim, device);
        cls_token = nn.Parameter(zeros(1, 1, config.embed_dim, device: device));
        pos_embed = nn.Parameter(zeros(1, config.NumPatches + 1, config.embed_dim, device: device));
        blocks = new ModuleList<Block>();
        for (var i = 0; i < config.depth; i++)
            blocks.Add(new Block(config.embed_dim, config.num_heads, config.mlp_ratio, config.qkv_bias, 1e-6, device) { GridSide = config.img_size / config.patch_size });
        norm = nn.LayerNorm(config.embed_dim, 1e-6, device: device);
        head = config.num_classes > 0 ? nn.Linear(config.embed_dim, config.num_classes, device: device) : nn.Identity();
        RegisterComponents();
        Init.TruncNormal(pos_embed, 0.02, device);
        if (!Init.IsMeta(device)) { using var _ = no_grad(); nn.init.normal_(cls_token, 0, 1e-6); }
        foreach (var b in blocks) b.InitTimm(device);
        Init.Linear(head, device);
    }

    public IReadOnlyList<Block> Blocks => blocks.ToList();

    /// VPT's prompt tokens while set (ONNX export writes them into the token stream).
    public VisualPrompts? Prompts => prompt;

    public (long Dim, int Depth, long PatchArea) PromptShape => (Config.embed_dim, (int)Config.depth, Config.patch_size * Config.patch_size);

    public void SetPrompts(VisualPrompts? prompts)
    {
        if (prompt is not null) register_module("prompt", null!);
        if (prompts is not null) register_module("prompt", prompts);
        prompt = prompts;
    }

    /// Normalised tokens [B, 1 + N, C] before pooling.
    public Tensor ForwardFeatures(Tensor x)
    {
        if (x.dim() != 4 || x.shape[1] != Config.in_chans || x.shape[2] != Config.img_size || x.shape[3] != Config.img_size)
            throw new ArgumentException($"This ViT takes images [N, {Config.in_chans}, {Config.img_size}, {Config.img_size}] (its in_chans and img_size); got [{string.Join(", ", x.shape)}]. Resize the input or build the model with a matching img_size.");
        using var scope = NewDisposeScope();
        // Mixed precision (layers in bf16, adapters and this module's own tokens in fp32): the stem takes its weight's dtype
        // and the token stream keeps the stem's, whatever dtype the parameters beside it have.
        var stem = patch_embed.WeightType;
        var t = patch_embed.forward(x.dtype == stem ? x : x.to(stem));
        var cls = cls_token.to(t.dtype).expand(t.shape[0], -1, -1);
        t = cat(new[] { cls, t }, 1).Plus(pos_embed.to(t.dtype));
        if (prompt is null)
            foreach (var b in blocks) t = b.forward(t);
        else
        {
            // VPT: [cls, prompts, patches]; deep VPT replaces the prompt outputs before each later block
            long batch = t.shape[0], n = prompt.Tokens;
            t = cat(new[] { t.narrow(1, 0, 1), prompt.At(0, batch, t.dtype), t.narrow(1, 1, t.shape[1] - 1) }, 1);
            var i = 0;
            foreach (var b in blocks)
            {
                if (i > 0 && prompt.Deep)
                    t = cat(new[] { t.narrow(1, 0, 1), prompt.At(i, batch, t.dtype), t.narrow(1, 1 + n, t.shape[1] - 1 - n) }, 1);
                t = b.forward(t);
                i++;
            }
            // the prompts' outputs are dropped: the sequence is the model's own again
            t = cat(new[] { t.narrow(1, 0, 1), t.narrow(1, 1 + n, t.shape[1] - 1 - n) }, 1);
        }
        return norm.forward(t).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var f = ForwardFeatures(x);
        return head.forward(f.select(1, 0)).MoveToOuterDisposeScope();
    }
}

/// Named ViT configurations (timm's registered factory functions).
public static class VitModels
{
    public static VitConfig vit_tiny_patch16_224 => new(embed_dim: 192, depth: 12, num_heads: 3);
    public static VitConfig vit_small_patch16_224 => new(embed_dim: 384, depth: 12, num_heads: 6);
    public static VitConfig vit_base_patch16_224 => new(embed_dim: 768, depth: 12, num_heads: 12);
    public static VitConfig vit_large_patch16_224 => new(embed_dim: 1024, depth: 24, num_heads: 16);
}
