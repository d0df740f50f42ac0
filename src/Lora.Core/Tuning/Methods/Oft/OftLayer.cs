using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// OFT around a Linear or a Conv2d, as PEFT's oft.Linear / oft.Conv2d: `oft_R.&lt;adapter&gt;.weight`
/// per adapter (<see cref="OftRotation"/>), W' = W·Rᵀ. PEFT's forward rotates the input instead: the
/// same for a Linear, but for a k×k Conv2d it rotates unfolded patches and folds them back, which
/// sums overlapping patches and is not its own merge; here the forward is the merge's.
public sealed class OftLayer : WeightTransformLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots oft_R = new();
#pragma warning restore IDE1006

    public OftLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(OftLayer), baseLayer) => RegisterComponents();

    public override string Method => "OFT";
    public override TuningMethod Owner => OftMethod.Instance;

    public OftRotation Rotation(string adapter) => oft_R.Module<OftRotation>(adapter);

    public void AddAdapter(string adapter, OftConfig config)
    {
        CheckNew(adapter);
        var n = Features;
        if (n > 1 << 20) throw new ArgumentException($"OFT cannot rotate {n} input features");
        var (blocks, size) = config.Resolve((int)n);
        // b(b−1)/2 parameters per block: a block the size of a large layer is refused before allocating
        if ((long)size * (size - 1) / 2 * (config.BlockShare ? 1 : blocks) > 1L << 26)
            throw new ArgumentException($"OFT blocks of {size} on {n} features would need {(long)size * (size - 1) / 2 * blocks} parameters; lower oft_block_size or raise r");
        oft_R.AddModule(adapter, new OftRotation(blocks, size, config, BaseWeight));
        Added(adapter);
    }

    protected override Tensor Transform(Tensor w, string adapter) => Rotation(adapter).Rotate(w);

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [Rotation(adapter).weight];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) => [("oft_R.weight", Rotation(adapter).weight)];

    protected override void RemoveParameters(string adapter) => oft_R.Remove(adapter);
}
