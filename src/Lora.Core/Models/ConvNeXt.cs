using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// timm's ConvNeXtBlock (conv_mlp=False): depthwise 7×7 conv, LayerNorm and Mlp channels-last,
/// layer scale `gamma`, residual.
public sealed class ConvNeXtBlock : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> conv_dw;
    private nn.Module<Tensor, Tensor> norm;
    private Mlp mlp;
    private Parameter gamma;

    public ConvNeXtBlock(long dim, double lsInitValue = 1e-6, Device? device = null) : base(nameof(ConvNeXtBlock))
    {
        conv_dw = nn.Conv2d(dim, dim, 7, padding: 3, groups: dim, device: device);
        norm = nn.LayerNorm(dim, 1e-6, device: device);
        mlp = new Mlp(dim, 4 * dim, dim, device);
        using (var init = lsInitValue.ToScalar()) // held: a temporary Scalar may be finalized mid-call
            gamma = nn.Parameter(full(dim, init, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = conv_dw.forward(x).permute(0, 2, 3, 1);
        y = mlp.forward(norm.forward(y)).permute(0, 3, 1, 2);
        // gamma is held by this (non-leaf) block and stays float32 under bf16 training: join y's dtype
        y = y * gamma.to(y.dtype).reshape(1, -1, 1, 1);
        return y.Plus(x).MoveToOuterDisposeScope();
    }
}

/// timm's ConvNeXtStage: optional downsample (LayerNorm2d, 2×2 stride-2 conv) then blocks.
public sealed class ConvNeXtStage : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> downsample;
    private ModuleList<ConvNeXtBlock> blocks;

    public ConvNeXtStage(long inChs, long outChs, long depth, bool downsampleFirst, Device? device = null) : base(nameof(ConvNeXtStage))
    {
        downsample = downsampleFirst
            ? nn.Sequential(new LayerNorm2d(inChs, 1e-6, device), nn.Conv2d(inChs, outChs, 2, stride: 2, device: device))
            : nn.Identity();
        blocks = new ModuleList<ConvNeXtBlock>();
        for (var i = 0; i < depth; i++) blocks.Add(new ConvNeXtBlock(outChs, 1e-6, device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = downsample.forward(x);
        foreach (var b in blocks) y = b.forward(y);
        return y.MoveToOuterDisposeScope();
    }
}

/// timm's NormMlpClassifierHead without hidden layer: global average pool, LayerNorm2d, fc.
public sealed class NormClassifierHead : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> norm;
    private nn.Module<Tensor, Tensor> fc;

    public NormClassifierHead(long features, long numClasses, double eps = 1e-6, Device? device = null) : base(nameof(NormClassifierHead))
    {
        norm = new LayerNorm2d(features, eps, device);
        fc = numClasses > 0 ? nn.Linear(features, numClasses, device: device) : nn.Identity();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var pooled = x.mean(new long[] { 2, 3 }, keepdim: true);
        return fc.forward(norm.forward(pooled).flatten(1)).MoveToOuterDisposeScope();
    }
}

/// timm's ConvNeXt constructor arguments (the subset this zoo supports).
public sealed record ConvNeXtConfig(long in_chans = 3, long num_classes = 1000, long[]? depths = null, long[]? dims = null)
{
    public long[] Depths => depths ?? new long[] { 3, 3, 9, 3 };
    public long[] Dims => dims ?? new long[] { 96, 192, 384, 768 };
}

/// timm's ConvNeXt: patchify stem (4×4 stride-4 conv, LayerNorm2d), four stages, norm head.
public sealed class ConvNeXt : nn.Module<Tensor, Tensor>, IHasModelCard
{
    public ConvNeXtConfig Config { get; }
    public ModelCard Card => ModelCard.Of(Config.in_chans, null, "head", ModelTask.Classification);
    private nn.Module<Tensor, Tensor> stem;
    private ModuleList<ConvNeXtStage> stages;
    private NormClassifierHead head;

    public ConvNeXt(ConvNeXtConfig config, Device? device = null) : base(nameof(ConvNeXt))
    {
        var depths = config.Depths;
        var dims = config.Dims;
        if (depths.Length != dims.Length || depths.Length == 0)
            throw new ArgumentException($"ConvNeXt needs as many depths as dims (got {depths.Length} depths, {dims.Length} dims).");
        Config = config;
        stem = nn.Sequential(nn.Conv2d(config.in_chans, dims[0], 4, stride: 4, device: device), new LayerNorm2d(dims[0], 1e-6, device));
        stages = new ModuleList<ConvNeXtStage>();
        var prev = dims[0];
        for (var i = 0; i < depths.Length; i++)
        {
            // timm: stage 0 follows the stem directly; later stages halve the resolution first.
            stages.Add(new ConvNeXtStage(prev, dims[i], depths[i], downsampleFirst: i > 0, device));
            prev = dims[i];
        }
        head = new NormClassifierHead(prev, config.num_classes, 1e-6, device);
        RegisterComponents();
        Init.ConvAndLinear(this, device);
    }

    public Tensor ForwardFeatures(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = stem.forward(x);
        foreach (var s in stages) y = s.forward(y);
        return y.MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        using var f = ForwardFeatures(x);
        return head.forward(f);
    }
}

/// Named ConvNeXt configurations (timm's registered factory functions).
public static class ConvNeXtModels
{
    public static ConvNeXtConfig convnext_tiny => new(depths: new long[] { 3, 3, 9, 3 }, dims: new long[] { 96, 192, 384, 768 });
    public static ConvNeXtConfig convnext_small => new(depths: new long[] { 3, 3, 27, 3 }, dims: new long[] { 96, 192, 384, 768 });
    public static ConvNeXtConfig convnext_base => new(depths: new long[] { 3, 3, 27, 3 }, dims: new long[] { 128, 256, 512, 1024 });
}
