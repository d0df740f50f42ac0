using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// OFT around a Linear or a Conv2d, as PEFT's oft.Linear / oft.Conv2d: `oft_R.&lt;adapter&gt;.weight`
/// per adapter (<see cref="OftRotation"/>). The forward uses the rotated weight W·Rᵀ (a Conv2d's
/// weight flattened to (out, in·kh·kw), PEFT's merge layout), so the unmerged forward is the merged
/// one. PEFT rotates the input instead: the same for a Linear, but for a k×k Conv2d it rotates
/// unfolded patches and folds them back, which sums overlapping patches and is not its own merge.
/// Several active adapters rotate in turn, in the order merging applies them.
public sealed class OftLayer : TunerLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots oft_R = new();
#pragma warning restore IDE1006
    readonly List<string> names = new();

    public OftLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(OftLayer), baseLayer) => RegisterComponents();

    public override string Method => "OFT";
    public override TuningMethod Owner => OftMethod.Instance;
    public override IReadOnlyList<string> AdapterNames => names;
    public override Parameter BaseWeight => Channels.Own(base_layer, "weight")!;

    /// The size of the rotated side: in_features, or in_channels·kh·kw (PEFT's conv_filter_dim).
    public long RotatedFeatures => base_layer switch
    {
        Linear l => l.in_features,
        Conv2d c => c.in_channels * c.kernel_size[0] * c.kernel_size[1],
        var m => throw new ArgumentException($"OFT cannot tune a {m.GetType().Name}"),
    };

    public OftRotation Rotation(string adapter) => oft_R.Module<OftRotation>(adapter);

    public void AddAdapter(string adapter, OftConfig config)
    {
        if (names.Contains(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        var n = RotatedFeatures;
        if (n > 1 << 20) throw new ArgumentException($"OFT cannot rotate {n} input features");
        var (blocks, size) = config.Resolve((int)n);
        // b(b−1)/2 parameters per block: a block the size of a large layer is refused before allocating
        if ((long)size * (size - 1) / 2 * (config.BlockShare ? 1 : blocks) > 1L << 26)
            throw new ArgumentException($"OFT blocks of {size} on {n} features would need {(long)size * (size - 1) / 2 * blocks} parameters; lower oft_block_size or raise r");
        oft_R.AddModule(adapter, new OftRotation(blocks, size, config, BaseWeight));
        names.Add(adapter);
    }

    protected override Tensor MergedWeight(Tensor weight, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        return Rotation(adapter).Rotate(weight).to(weight.dtype).MoveToOuterDisposeScope();
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var w = BaseWeight.detach();
        return (MergedWeight(w, adapter) - w).MoveToOuterDisposeScope();
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [Rotation(adapter).weight];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) => [("oft_R.weight", Rotation(adapter).weight)];

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter) =>
        throw new InvalidOperationException("OFT rotates the weight; its forward does not add outputs");

    /// The base op with the weight rotated by every active, unmerged adapter.
    public override Tensor forward(Tensor x)
    {
        if (AdaptersDisabled) return base.forward(x);
        var pending = ActiveAdapters.Where(a => !MergedAdapters.Contains(a)).ToList();
        if (pending.Count == 0) return base_layer.forward(x);
        using var scope = torch.NewDisposeScope();
        Tensor w = BaseWeight;
        foreach (var a in pending) w = Rotation(a).Rotate(w);
        w = In(w, x);
        var bias = Channels.Own(base_layer, "bias") is { } b ? In(b, x) : null;
        var y = base_layer switch
        {
            Conv2d c => nn.functional.conv2d(x, w, bias, c.stride, LycorisLayer.ExplicitPadding(c), c.dilation, c.groups),
            _ => nn.functional.linear(x, w, bias),
        };
        return y.MoveToOuterDisposeScope();
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        oft_R.Remove(adapter);
        names.Remove(adapter);
    }
}
