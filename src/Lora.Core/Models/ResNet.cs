using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// timm's BasicBlock (expansion 1): 3×3 conv (stride) → BN → ReLU → 3×3 conv → BN, plus the
/// shortcut (downsample when the shape changes), then ReLU.
public sealed class BasicBlock : nn.Module<Tensor, Tensor>
{
    public const long Expansion = 1;
    private nn.Module<Tensor, Tensor> conv1;
    private nn.Module<Tensor, Tensor> bn1;
    private nn.Module<Tensor, Tensor> conv2;
    private nn.Module<Tensor, Tensor> bn2;
    private nn.Module<Tensor, Tensor>? downsample;

    public BasicBlock(long inplanes, long planes, long stride, nn.Module<Tensor, Tensor>? downsample, Device? device = null) : base(nameof(BasicBlock))
    {
        conv1 = nn.Conv2d(inplanes, planes, 3, stride: stride, padding: 1, bias: false, device: device);
        bn1 = nn.BatchNorm2d(planes, device: device);
        conv2 = nn.Conv2d(planes, planes, 3, padding: 1, bias: false, device: device);
        bn2 = nn.BatchNorm2d(planes, device: device);
        this.downsample = downsample;
        RegisterComponents();
    }

    /// timm's zero_init_last: the last BN of the residual branch starts at zero.
    internal BatchNorm2d LastNorm => (BatchNorm2d)bn2;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.relu(bn1.forward(conv1.forward(x)));
        y = bn2.forward(conv2.forward(y));
        var shortcut = downsample is null ? x : downsample.forward(x);
        return nn.functional.relu(y.Plus(shortcut)).MoveToOuterDisposeScope();
    }
}

/// timm's Bottleneck (expansion 4, ResNet v1.5: the stride sits on the 3×3 conv): 1×1 conv → BN →
/// ReLU → 3×3 conv (stride) → BN → ReLU → 1×1 conv → BN, plus the shortcut, then ReLU.
public sealed class Bottleneck : nn.Module<Tensor, Tensor>
{
    public const long Expansion = 4;
    private nn.Module<Tensor, Tensor> conv1;
    private nn.Module<Tensor, Tensor> bn1;
    private nn.Module<Tensor, Tensor> conv2;
    private nn.Module<Tensor, Tensor> bn2;
    private nn.Module<Tensor, Tensor> conv3;
    private nn.Module<Tensor, Tensor> bn3;
    private nn.Module<Tensor, Tensor>? downsample;

    public Bottleneck(long inplanes, long planes, long stride, nn.Module<Tensor, Tensor>? downsample, long baseWidth = 64, Device? device = null) : base(nameof(Bottleneck))
    {
        var width = planes * baseWidth / 64; // timm: floor(planes * base_width / 64) * cardinality (1)
        conv1 = nn.Conv2d(inplanes, width, 1, bias: false, device: device);
        bn1 = nn.BatchNorm2d(width, device: device);
        conv2 = nn.Conv2d(width, width, 3, stride: stride, padding: 1, bias: false, device: device);
        bn2 = nn.BatchNorm2d(width, device: device);
        conv3 = nn.Conv2d(width, planes * Expansion, 1, bias: false, device: device);
        bn3 = nn.BatchNorm2d(planes * Expansion, device: device);
        this.downsample = downsample;
        RegisterComponents();
    }

    internal BatchNorm2d LastNorm => (BatchNorm2d)bn3;

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.relu(bn1.forward(conv1.forward(x)));
        y = nn.functional.relu(bn2.forward(conv2.forward(y)));
        y = bn3.forward(conv3.forward(y));
        var shortcut = downsample is null ? x : downsample.forward(x);
        return nn.functional.relu(y.Plus(shortcut)).MoveToOuterDisposeScope();
    }
}

/// timm's ResNet constructor arguments (the subset this zoo supports). block: "BasicBlock" or
/// "Bottleneck"; layers: blocks per stage; channels: each stage's planes (timm's default 64..512);
/// base_width: the Bottleneck's width per 64 planes (wide_resnet uses 128).
public sealed record ResNetConfig(
    string block = "BasicBlock", long[]? layers = null, long[]? channels = null,
    long in_chans = 3, long num_classes = 1000, long base_width = 64)
{
    public long[] Layers => layers ?? new long[] { 2, 2, 2, 2 };
    public long[] Channels => channels ?? new long[] { 64, 128, 256, 512 };
    public bool IsBottleneck => block switch
    {
        "BasicBlock" or "basic" => false,
        "Bottleneck" or "bottleneck" => true,
        _ => throw new ArgumentException($"ResNet block must be \"BasicBlock\" or \"Bottleneck\", got \"{block}\"."),
    };
    public long Expansion => IsBottleneck ? Bottleneck.Expansion : BasicBlock.Expansion;
}

/// timm's ResNet (= torchvision's): 7×7 stride-2 stem conv, BN, ReLU, 3×3 stride-2 max pool,
/// stages layer1..layerN (each stage after the first halves the resolution), global average pool
/// (so any input size its strides allow), fc.
public sealed class ResNet : nn.Module<Tensor, Tensor>, IHasModelCard
{
    public ResNetConfig Config { get; }
    public ModelCard Card => ModelCard.Of(Config.in_chans, null, "fc", ModelTask.Classification);
    private nn.Module<Tensor, Tensor> conv1;
    private nn.Module<Tensor, Tensor> bn1;
    private readonly List<Sequential> stages = new();
    private nn.Module<Tensor, Tensor> fc;

    public ResNet(ResNetConfig config, Device? device = null) : base(nameof(ResNet))
    {
        var layers = config.Layers;
        var channels = config.Channels;
        if (layers.Length != channels.Length || layers.Length == 0)
            throw new ArgumentException($"ResNet needs as many layers as channels (got {layers.Length} layers, {channels.Length} channels).");
        if (layers.Any(n => n < 1)) throw new ArgumentException($"ResNet layers must all be at least 1, got [{string.Join(", ", layers)}].");
        Config = config;
        var bottleneck = config.IsBottleneck;
        const long stem = 64; // timm: the plain stem always has 64 channels (stem_width is for deep stems)
        conv1 = nn.Conv2d(config.in_chans, stem, 7, stride: 2, padding: 3, bias: false, device: device);
        bn1 = nn.BatchNorm2d(stem, device: device);
        register_module("conv1", conv1);
        register_module("bn1", bn1);
        var inplanes = stem;
        for (var i = 0; i < layers.Length; i++)
        {
            var planes = channels[i];
            var stride = i == 0 ? 1L : 2L;
            var outplanes = planes * config.Expansion;
            var blocks = new List<nn.Module<Tensor, Tensor>>();
            for (var j = 0; j < layers[i]; j++)
            {
                var s = j == 0 ? stride : 1L;
                // timm's downsample_conv: 1×1 conv (stride) + BN, where the block changes the shape
                var down = s != 1 || inplanes != outplanes
                    ? nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride: s, bias: false, device: device), nn.BatchNorm2d(outplanes, device: device))
                    : null;
                blocks.Add(bottleneck
                    ? new Bottleneck(inplanes, planes, s, down, config.base_width, device)
                    : new BasicBlock(inplanes, planes, s, down, device));
                inplanes = outplanes;
            }
            var stage = nn.Sequential(blocks.ToArray());
            stages.Add(stage);
            register_module($"layer{i + 1}", stage);
        }
        NumFeatures = inplanes;
        fc = config.num_classes > 0 ? nn.Linear(inplanes, config.num_classes, device: device) : nn.Identity();
        register_module("fc", fc);
        InitTimm(device);
    }

    /// Channels of the pooled features (fc's input).
    public long NumFeatures { get; }

    /// timm's init_weights: kaiming_normal_(fan_out, relu) convs, BN at (1, 0), zero_init_last; fc keeps PyTorch's default.
    private void InitTimm(Device? device)
    {
        if (Init.IsMeta(device)) return;
        using var _ = no_grad();
        foreach (var (_, m) in named_modules())
        {
            if (m is Conv2d c) nn.init.kaiming_normal_(c.weight, mode: nn.init.FanInOut.FanOut, nonlinearity: nn.init.NonlinearityType.ReLU);
            else if (m is BasicBlock b) b.LastNorm.weight!.zero_();
            else if (m is Bottleneck bn) bn.LastNorm.weight!.zero_();
        }
    }

    /// The last stage's feature map [B, NumFeatures, H/32, W/32].
    public Tensor ForwardFeatures(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.relu(bn1.forward(conv1.forward(x)));
        y = nn.functional.max_pool2d(y, 3, 2, 1);
        foreach (var s in stages) y = s.forward(y);
        return y.MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var pooled = ForwardFeatures(x).mean(new long[] { 2, 3 });
        return fc.forward(pooled).MoveToOuterDisposeScope();
    }
}

/// Named ResNet configurations (timm's registered factory functions).
public static class ResNetModels
{
    public static ResNetConfig resnet18 => new(block: "BasicBlock", layers: new long[] { 2, 2, 2, 2 });
    public static ResNetConfig resnet34 => new(block: "BasicBlock", layers: new long[] { 3, 4, 6, 3 });
    public static ResNetConfig resnet50 => new(block: "Bottleneck", layers: new long[] { 3, 4, 6, 3 });
}
