using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Models;

/// Two 3×3 conv → BatchNorm → ReLU steps (the LoRA-UNet example's building block). conv1 and conv2
/// are plain Conv2d layers that LoRA Conv2d can target.
public sealed class DoubleConv : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> conv1;
    private nn.Module<Tensor, Tensor> bn1;
    private nn.Module<Tensor, Tensor> conv2;
    private nn.Module<Tensor, Tensor> bn2;

    public DoubleConv(long inChs, long outChs, Device? device = null) : base(nameof(DoubleConv))
    {
        conv1 = nn.Conv2d(inChs, outChs, 3, padding: 1, bias: false, device: device);
        bn1 = nn.BatchNorm2d(outChs, device: device);
        conv2 = nn.Conv2d(outChs, outChs, 3, padding: 1, bias: false, device: device);
        bn2 = nn.BatchNorm2d(outChs, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.relu(bn1.forward(conv1.forward(x)));
        y = nn.functional.relu(bn2.forward(conv2.forward(y)));
        return y.MoveToOuterDisposeScope();
    }
}

/// Decoder step: 2× transposed-conv upsampling, concatenation with the encoder's skip, DoubleConv.
public sealed class UpBlock : nn.Module<Tensor, Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> up;
    private DoubleConv conv;

    public UpBlock(long inChs, long outChs, Device? device = null) : base(nameof(UpBlock))
    {
        up = nn.ConvTranspose2d(inChs, outChs, 2, stride: 2, device: device);
        conv = new DoubleConv(2 * outChs, outChs, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor skip)
    {
        using var scope = NewDisposeScope();
        var y = up.forward(x);
        // odd encoder sizes: pad the upsampled map to the skip's size
        long dh = skip.shape[2] - y.shape[2], dw = skip.shape[3] - y.shape[3];
        if (dh != 0 || dw != 0) y = nn.functional.pad(y, new[] { dw / 2, dw - dw / 2, dh / 2, dh - dh / 2 });
        return conv.forward(cat(new[] { skip, y }, 1)).MoveToOuterDisposeScope();
    }
}

/// UNet configuration: depth is the number of 2× downsamplings; widths double at each level.
public sealed record UNetConfig(long in_chans = 3, long num_classes = 1, long base_width = 32, long depth = 4);

/// A plain UNet for image → mask logits [N, num_classes, H, W]: encoder DoubleConvs with max-pooling,
/// decoder with transposed-conv upsampling and skip concatenations, a final 1×1 conv.
public sealed class UNet : nn.Module<Tensor, Tensor>, IHasModelCard
{
    public UNetConfig Config { get; }
    public ModelCard Card => ModelCard.Of(Config.in_chans, null, "outc", ModelTask.Segmentation, "UNet");
    private DoubleConv inc;
    private ModuleList<DoubleConv> downs;
    private ModuleList<UpBlock> ups;
    private nn.Module<Tensor, Tensor> outc;

    public UNet(UNetConfig config, Device? device = null) : base(nameof(UNet))
    {
        if (config.depth < 1 || config.base_width < 1) throw new ArgumentException($"UNet needs depth ≥ 1 and base_width ≥ 1 (got depth {config.depth}, base_width {config.base_width}).");
        Config = config;
        var w = config.base_width;
        inc = new DoubleConv(config.in_chans, w, device);
        downs = new ModuleList<DoubleConv>();
        for (var i = 0; i < config.depth; i++) downs.Add(new DoubleConv(w << i, w << (i + 1), device));
        ups = new ModuleList<UpBlock>();
        for (var i = (int)config.depth; i > 0; i--) ups.Add(new UpBlock(w << i, w << (i - 1), device));
        outc = nn.Conv2d(w, config.num_classes, 1, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var skips = new List<Tensor> { inc.forward(x) };
        foreach (var d in downs) skips.Add(d.forward(nn.functional.max_pool2d(skips[^1], 2)));
        var y = skips[^1];
        var k = skips.Count - 2;
        foreach (var u in ups) y = u.forward(y, skips[k--]);
        return outc.forward(y).MoveToOuterDisposeScope();
    }
}
