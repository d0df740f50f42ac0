using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// The model registry: timm-style names (and family names taking timm constructor arguments) to modules.
public static class Zoo
{
    private delegate nn.Module<Tensor, Tensor> Factory(ModelArgs args, Device? device);

    private static readonly Dictionary<string, Factory> registry = new()
    {
        ["vit"] = (a, d) => new VisionTransformer(Vit(a, new VitConfig()), d),
        ["vit_tiny_patch16_224"] = (a, d) => new VisionTransformer(Vit(a, VitModels.vit_tiny_patch16_224), d),
        ["vit_small_patch16_224"] = (a, d) => new VisionTransformer(Vit(a, VitModels.vit_small_patch16_224), d),
        ["vit_base_patch16_224"] = (a, d) => new VisionTransformer(Vit(a, VitModels.vit_base_patch16_224), d),
        ["vit_large_patch16_224"] = (a, d) => new VisionTransformer(Vit(a, VitModels.vit_large_patch16_224), d),
        ["convnext"] = (a, d) => new ConvNeXt(ConvNeXtArgs(a, new ConvNeXtConfig()), d),
        ["convnext_tiny"] = (a, d) => new ConvNeXt(ConvNeXtArgs(a, ConvNeXtModels.convnext_tiny), d),
        ["convnext_small"] = (a, d) => new ConvNeXt(ConvNeXtArgs(a, ConvNeXtModels.convnext_small), d),
        ["convnext_base"] = (a, d) => new ConvNeXt(ConvNeXtArgs(a, ConvNeXtModels.convnext_base), d),
        ["resnet"] = (a, d) => new ResNet(ResNetArgs(a, new ResNetConfig()), d),
        ["resnet18"] = (a, d) => new ResNet(ResNetArgs(a, ResNetModels.resnet18), d),
        ["resnet34"] = (a, d) => new ResNet(ResNetArgs(a, ResNetModels.resnet34), d),
        ["resnet50"] = (a, d) => new ResNet(ResNetArgs(a, ResNetModels.resnet50), d),
        ["tiny_vit"] = (a, d) => new TinyVit(TinyVitArgs(a, new TinyVitConfig()), d),
        ["tiny_vit_5m_224"] = (a, d) => new TinyVit(TinyVitArgs(a, TinyVitModels.tiny_vit_5m_224), d),
        ["tiny_vit_11m_224"] = (a, d) => new TinyVit(TinyVitArgs(a, TinyVitModels.tiny_vit_11m_224), d),
        ["tiny_vit_21m_224"] = (a, d) => new TinyVit(TinyVitArgs(a, TinyVitModels.tiny_vit_21m_224), d),
        ["sam_vit"] = (a, d) => new Sam(SamArgs(a, SamModels.sam_vit_b), d),
        ["sam_vit_b"] = (a, d) => new Sam(SamArgs(a, SamModels.sam_vit_b), d),
        ["sam_vit_l"] = (a, d) => new Sam(SamArgs(a, SamModels.sam_vit_l), d),
        ["sam_vit_h"] = (a, d) => new Sam(SamArgs(a, SamModels.sam_vit_h), d),
        ["sam_vit_s"] = (a, d) => new Sam(SamArgs(a, SamModels.sam_vit_s), d),
        ["mobile_sam"] = (a, d) => new Sam(SamArgs(a, SamModels.mobile_sam), d),
        ["sam_tiny_vit"] = (a, d) => new Sam(SamArgs(a, SamModels.sam_tiny_vit), d),
        ["resnet18_mlnet"] = (a, d) => Onnx.MlNetResNet18.Create(a, d),
        ["unet"] = (a, d) => new UNet(new UNetConfig(
            in_chans: a.Long("in_chans", 3), num_classes: a.Long("num_classes", 1),
            base_width: a.Long("base_width", 32), depth: a.Long("depth", 4)), d),
    };

    /// Every name Create accepts, sorted.
    public static IReadOnlyList<string> Names => registry.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();

    /// Creates a model by name. Named models take their timm configuration, with any argument in
    /// args (num_classes, img_size, in_chans, ...) overriding it; family names (vit, convnext, ...)
    /// take timm constructor arguments with timm's defaults. device: null for the default device,
    /// or torch.META to build the structure without storage (e.g. to count parameters).
    public static nn.Module<Tensor, Tensor> Create(string name, ModelArgs? args = null, Device? device = null)
    {
        if (!registry.TryGetValue(name, out var factory)) throw new ArgumentException(UnknownName(name));
        return factory(args ?? ModelArgs.Empty, device);
    }

    /// Creates a model from a JSON object of timm constructor arguments (as in tests/fixtures/*.json).
    public static nn.Module<Tensor, Tensor> Create(string name, string jsonArgs, Device? device = null) =>
        Create(name, ModelArgs.FromJson(jsonArgs), device);

    /// The model's head module path (<see cref="IHasClassifier"/>, timm's pretrained_cfg['classifier']).
    public static string Classifier(nn.Module model) => model is IHasClassifier c ? c.Classifier
        : throw new ArgumentException($"{model.GetType().Name} names no classifier module (it does not implement IHasClassifier): name the modules to train explicitly");

    /// The number of parameters of a named model, counted on the meta device (no memory used).
    public static long ParameterCount(string name, ModelArgs? args = null)
    {
        using var m = Create(name, args, META);
        return m.parameters().Sum(p => p.numel());
    }

    internal static string UnknownName(string name)
    {
        var close = Names
            .Select(n => (n, d: EditDistance(name.ToLowerInvariant(), n)))
            .Where(x => x.d <= Math.Max(3, name.Length / 3) || x.n.Contains(name.ToLowerInvariant()) && name.Length >= 3)
            .OrderBy(x => x.d).ThenBy(x => x.n, StringComparer.Ordinal)
            .Take(5).Select(x => x.n).ToList();
        var hint = close.Count > 0
            ? $"Did you mean: {string.Join(", ", close)}?"
            : $"Known models: {string.Join(", ", Names)}.";
        return $"Unknown model '{name}'. {hint}";
    }

    /// Levenshtein distance (insertions, deletions, substitutions).
    internal static int EditDistance(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++) prev[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (var j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }

    private static VitConfig Vit(ModelArgs a, VitConfig d) => new(
        img_size: a.Long("img_size", d.img_size), patch_size: a.Long("patch_size", d.patch_size),
        in_chans: a.Long("in_chans", d.in_chans), num_classes: a.Long("num_classes", d.num_classes),
        embed_dim: a.Long("embed_dim", d.embed_dim), depth: a.Long("depth", d.depth),
        num_heads: a.Long("num_heads", d.num_heads), mlp_ratio: a.Double("mlp_ratio", d.mlp_ratio),
        qkv_bias: a.Bool("qkv_bias", d.qkv_bias));

    private static ConvNeXtConfig ConvNeXtArgs(ModelArgs a, ConvNeXtConfig d) => new(
        in_chans: a.Long("in_chans", d.in_chans), num_classes: a.Long("num_classes", d.num_classes),
        depths: a.Longs("depths", d.Depths), dims: a.Longs("dims", d.Dims));

    private static ResNetConfig ResNetArgs(ModelArgs a, ResNetConfig d) => new(
        block: a.String("block", d.block), layers: a.Longs("layers", d.Layers), channels: a.Longs("channels", d.Channels),
        in_chans: a.Long("in_chans", d.in_chans), num_classes: a.Long("num_classes", d.num_classes),
        base_width: a.Long("base_width", d.base_width));

    private static TinyVitConfig TinyVitArgs(ModelArgs a, TinyVitConfig d) => new(
        in_chans: a.Long("in_chans", d.in_chans), num_classes: a.Long("num_classes", d.num_classes),
        embed_dims: a.Longs("embed_dims", d.EmbedDims), depths: a.Longs("depths", d.Depths),
        num_heads: a.Longs("num_heads", d.NumHeads), window_sizes: a.Longs("window_sizes", d.WindowSizes),
        mlp_ratio: a.Double("mlp_ratio", d.mlp_ratio), mbconv_expand_ratio: a.Double("mbconv_expand_ratio", d.mbconv_expand_ratio),
        local_conv_size: a.Long("local_conv_size", d.local_conv_size));

    private static SamConfig SamArgs(ModelArgs a, SamConfig d) => new(
        encoder: d.encoder, img_size: a.Long("img_size", d.img_size), in_chans: a.Long("in_chans", d.in_chans),
        patch_size: a.Long("patch_size", d.patch_size), embed_dim: a.Long("embed_dim", d.embed_dim),
        depth: a.Long("depth", d.depth), num_heads: d.encoder == "vit" ? a.Long("num_heads", d.num_heads) : d.num_heads, mlp_ratio: a.Double("mlp_ratio", d.mlp_ratio),
        qkv_bias: a.Bool("qkv_bias", d.qkv_bias), use_rel_pos: a.Bool("use_rel_pos", d.use_rel_pos), window_size: a.Long("window_size", d.window_size),
        global_attn_indexes: a.Longs("global_attn_indexes", d.GlobalAttnIndexes),
        embed_dims: a.Longs("embed_dims", d.EmbedDims), depths: a.Longs("depths", d.Depths),
        stage_num_heads: d.encoder != "vit" ? a.Longs("num_heads", d.NumHeadsPerStage) : d.NumHeadsPerStage,
        window_sizes: a.Longs("window_sizes", d.WindowSizes),
        out_chans: a.Long("out_chans", d.out_chans), decoder_depth: a.Long("decoder_depth", d.decoder_depth),
        decoder_num_heads: a.Long("decoder_num_heads", d.decoder_num_heads), decoder_mlp_dim: a.Long("decoder_mlp_dim", d.decoder_mlp_dim),
        iou_head_hidden_dim: a.Long("iou_head_hidden_dim", d.iou_head_hidden_dim), mask_in_chans: a.Long("mask_in_chans", d.mask_in_chans));
}
