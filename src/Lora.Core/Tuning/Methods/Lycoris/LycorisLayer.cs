using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// What LoHa and LoKr layers share, as PEFT's LycorisLayer: per adapter a rank and alpha, bare
/// parameters in PEFT's ParameterDicts (`hada_w1_a.&lt;adapter&gt;`, `lokr_w1.&lt;adapter&gt;`, ...), and a
/// forward that adds the layer's own op with ΔW: F.linear(x, ΔW) or F.conv2d(x, ΔW) with the base's
/// stride, padding, dilation and groups.
public abstract class LycorisLayer : TunerLayer
{
    readonly Dictionary<string, (int Rank, double Alpha)> options = new();

    protected LycorisLayer(string name, nn.Module<Tensor, Tensor> baseLayer) : base(name, baseLayer) { }

    public override IReadOnlyList<string> AdapterNames => options.Keys.ToList();
    public override Parameter BaseWeight => Channels.Own(base_layer, "weight")!;
    public int Rank(string adapter) => options[adapter].Rank;
    public double Scaling(string adapter) => options[adapter].Alpha / options[adapter].Rank;

    /// The layer's parameter dictionaries under their PEFT names, in PEFT's order.
    protected abstract IEnumerable<(string Key, AdapterSlots Slots)> Slots { get; }

    /// ΔW of one adapter in the base weight's shape, with gradient (the forward uses it).
    protected abstract Tensor Delta(string adapter);

    /// Creates and initialises the adapter's parameters (PEFT's update_layer).
    protected abstract void Create(string adapter, int rank, LycorisConfig config);

    public void AddAdapter(string adapter, int rank, double alpha, LycorisConfig config)
    {
        if (options.ContainsKey(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        if (rank <= 0) throw new ArgumentException($"{Method} rank must be positive, got {rank}");
        var (i, o) = base_layer switch { Linear l => (l.in_features, l.out_features), Conv2d c => (c.in_channels * c.kernel_size[0] * c.kernel_size[1] / c.groups, c.out_channels), _ => (0L, 0L) };
        CheckRankFits(rank, i, o, base_layer.GetType().Name);
        options[adapter] = (rank, alpha);
        Create(adapter, rank, config);
    }

    /// A new parameter of the adapter, in the base weight's dtype and device.
    protected Parameter Add(AdapterSlots slots, string adapter, params long[] shape)
    {
        var w = BaseWeight;
        var p = new Parameter(torch.empty(shape, dtype: w.dtype, device: w.device));
        slots.AddParameter(adapter, p);
        return p;
    }

    protected static void Kaiming(Tensor t) { using var _ = torch.no_grad(); nn.init.kaiming_uniform_(t, a: Math.Sqrt(5)); }
    protected static void Zero(Tensor t) { using var _ = torch.no_grad(); nn.init.zeros_(t); }

    /// The base weight's shape as PEFT's factors see it: (out, in/groups, kh, kw) for a Conv2d.
    protected long[] WeightShape => BaseWeight.shape;

    /// Whether a k×k Conv2d takes the CP decomposition (PEFT: never for a 1×1 kernel).
    protected bool Effective(LycorisConfig c) => c.UseEffectiveConv2d && base_layer is Conv2d conv && (conv.kernel_size[0] != 1 || conv.kernel_size[1] != 1);

    public override Tensor DeltaWeight(string adapter)
    {
        using var _ = torch.no_grad();
        return Delta(adapter).detach();
    }

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) =>
        Slots.Where(s => s.Slots.Contains(adapter)).Select(s => (s.Key, (Tensor)s.Slots.Parameter(adapter)));

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => PeftTensors(adapter, null).Select(t => (Parameter)t.Value);

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var d = In(Delta(adapter), x);
        var y = base_layer switch
        {
            Conv2d c => nn.functional.conv2d(x, d, null, c.stride, ExplicitPadding(c), c.dilation, c.groups),
            _ => nn.functional.linear(x, d),
        };
        return AddInResultDtype(result, y).MoveToOuterDisposeScope();
    }

    /// The padding of a Conv2d as numbers: 'valid' is none, 'same' (odd dilated kernels) is half the
    /// dilated kernel; null when 'same' would need uneven padding.
    internal static long[]? ExplicitPadding(Conv2d c) => c.padding_type switch
    {
        null => c.padding,
        Padding.Valid => [0, 0],
        _ when (c.dilation![0] * (c.kernel_size[0] - 1)) % 2 == 0 && (c.dilation[1] * (c.kernel_size[1] - 1)) % 2 == 0 =>
            [c.dilation[0] * (c.kernel_size[0] - 1) / 2, c.dilation[1] * (c.kernel_size[1] - 1) / 2],
        _ => null,
    };

    protected override void RemoveAdapterCore(string adapter)
    {
        foreach (var (_, s) in Slots) s.Remove(adapter);
        options.Remove(adapter);
    }
}
