using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoHa's configuration (PEFT's LoHaConfig, peft_type "LOHA").
public sealed record LoHaConfig : LycorisConfig
{
    public override TuningMethod Method => LoHaMethod.Instance;
}

/// LoHa (Hyeon-Woo et al. 2022, FedPara) around a Linear or Conv2d, as PEFT's loha layers:
/// ΔW = (w1_a · w1_b) ⊙ (w2_a · w2_b) · alpha/r, w2_b zero at first (no change). A k×k Conv2d
/// flattens its kernel into the in dimension, or with use_effective_conv2d takes CP cores
/// hada_t1/hada_t2 (r, r, kh, kw): ΔW[p, r', k, l] = Σ t[i, j, k, l] · w_b[j, r'] · w_a[i, p].
public sealed class LoHaLayer : LycorisLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots hada_w1_a = new();
    public AdapterSlots hada_w1_b = new();
    public AdapterSlots hada_w2_a = new();
    public AdapterSlots hada_w2_b = new();
    public AdapterSlots hada_t1 = new();
    public AdapterSlots hada_t2 = new();
#pragma warning restore IDE1006

    public LoHaLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(LoHaLayer), baseLayer) => RegisterComponents();

    public override string Method => "LoHa";
    public override TuningMethod Owner => LoHaMethod.Instance;

    protected override IEnumerable<(string Key, AdapterSlots Slots)> Slots =>
        [("hada_w1_a", hada_w1_a), ("hada_w1_b", hada_w1_b), ("hada_w2_a", hada_w2_a), ("hada_w2_b", hada_w2_b), ("hada_t1", hada_t1), ("hada_t2", hada_t2)];

    protected override void Create(string adapter, int r, LycorisConfig config)
    {
        var s = WeightShape;
        long outDim = s[0], inDim = s.Length == 4 && !Effective(config) ? s[1] * s[2] * s[3] : s[1];
        if (Effective(config))
        {
            foreach (var t in new[] { hada_t1, hada_t2 }) Kaiming(Add(t, adapter, r, r, s[2], s[3]));
            Kaiming(Add(hada_w1_a, adapter, r, outDim)); Kaiming(Add(hada_w1_b, adapter, r, inDim));
            Kaiming(Add(hada_w2_a, adapter, r, outDim));
            var w2b = Add(hada_w2_b, adapter, r, inDim);
            if (config.InitWeights) Zero(w2b); else Kaiming(w2b);
        }
        else
        {
            Kaiming(Add(hada_w1_a, adapter, outDim, r)); Kaiming(Add(hada_w1_b, adapter, r, inDim));
            Kaiming(Add(hada_w2_a, adapter, outDim, r));
            var w2b = Add(hada_w2_b, adapter, r, inDim);
            if (config.InitWeights) Zero(w2b); else Kaiming(w2b);
        }
    }

    protected override Tensor Delta(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        Tensor P(AdapterSlots s) => s.Parameter(adapter);
        Tensor w1, w2;
        if (hada_t1.Contains(adapter))
        {
            w1 = torch.einsum("ijkl,jr,ip->prkl", P(hada_t1), P(hada_w1_b), P(hada_w1_a));
            w2 = torch.einsum("ijkl,jr,ip->prkl", P(hada_t2), P(hada_w2_b), P(hada_w2_a));
        }
        else
        {
            w1 = P(hada_w1_a).matmul(P(hada_w1_b));
            w2 = P(hada_w2_a).matmul(P(hada_w2_b));
        }
        using var scale = Scaling(adapter).ToScalar();
        return (w1 * w2).mul(scale).reshape(BaseWeight.shape).MoveToOuterDisposeScope();
    }
}

/// LoHa on Linear and Conv2d layers, as PEFT's LoHaModel.
public sealed class LoHaMethod : LycorisMethod
{
    public static readonly LoHaMethod Instance = new();

    LoHaMethod() { }

    public override string Name => "LoHa";
    public override string PeftType => "LOHA";

    protected override LycorisLayer NewLayer(nn.Module<Tensor, Tensor> module) => new LoHaLayer(module);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (ReadCommon(json, new LoHaConfig()), null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter) =>
        WriteCommon((LoHaConfig)config);
}
