using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LoKr's configuration (PEFT's LoKrConfig, peft_type "LOKR").
public sealed record LoKrConfig : LycorisConfig
{
    public override TuningMethod Method => LoKrMethod.Instance;

    /// decompose_both: the left Kronecker factor low-rank too (w1_a · w1_b) when r is small enough.
    public bool DecomposeBoth { get; init; }

    /// decompose_factor: the factorisation's divider; -1 splits each dimension near its square root.
    public int DecomposeFactor { get; init; } = -1;

    /// init_weights = "lycoris": LyCORIS's initialisation (w2 zero) instead of PEFT's (w1 zero).
    public bool LycorisInit { get; init; }

    protected override void Check(List<string> errors)
    {
        base.Check(errors);
        if (DecomposeFactor == 0 || DecomposeFactor < -1) errors.Add($"DecomposeFactor must be positive or -1, got {DecomposeFactor}");
    }
}

/// LoKr (Yeh et al. 2023) around a Linear or Conv2d, as PEFT's lokr layers: ΔW = w1 ⊗ w2 · alpha/r,
/// out = a·b and in = c·d factored by <see cref="Factorization"/>; w1 (a, c) is full or w1_a · w1_b,
/// w2 (b, d[, kh, kw]) full, w2_a · w2_b, or with use_effective_conv2d a CP core lokr_t2 (r, r, kh, kw).
/// PEFT's initialisation makes w1 zero (no change at first).
public sealed class LoKrLayer : LycorisLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots lokr_w1 = new();
    public AdapterSlots lokr_w1_a = new();
    public AdapterSlots lokr_w1_b = new();
    public AdapterSlots lokr_w2 = new();
    public AdapterSlots lokr_w2_a = new();
    public AdapterSlots lokr_w2_b = new();
    public AdapterSlots lokr_t2 = new();
#pragma warning restore IDE1006

    public LoKrLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(LoKrLayer), baseLayer) => RegisterComponents();

    public override string Method => "LoKr";
    public override TuningMethod Owner => LoKrMethod.Instance;

    protected override IEnumerable<(string Key, AdapterSlots Slots)> Slots =>
        [("lokr_w1", lokr_w1), ("lokr_w1_a", lokr_w1_a), ("lokr_w1_b", lokr_w1_b), ("lokr_w2", lokr_w2), ("lokr_w2_a", lokr_w2_a), ("lokr_w2_b", lokr_w2_b), ("lokr_t2", lokr_t2)];

    /// PEFT's factorization: dimension = m · n with m ≤ n, m as close to the factor (or √dimension) as divisors allow.
    public static (long M, long N) Factorization(long dimension, int factor = -1)
    {
        if (factor > 0 && dimension % factor == 0) return (factor, dimension / factor);
        long f = factor == -1 ? dimension : factor;
        long m = 1, n = dimension, length = m + n;
        while (m < n)
        {
            var newM = m + 1;
            while (dimension % newM != 0) newM++;
            var newN = dimension / newM;
            if (newM + newN > length || newM > f) break;
            (m, n) = (newM, newN);
        }
        return m > n ? (n, m) : (m, n);
    }

    protected override void Create(string adapter, int r, LycorisConfig config)
    {
        var c = (LoKrConfig)config;
        var s = WeightShape;
        var (inM, inN) = Factorization(s[1], c.DecomposeFactor);
        var (outL, outK) = Factorization(s[0], c.DecomposeFactor);
        bool useW1 = !(c.DecomposeBoth && r < Math.Max(outL, inM) / 2.0);
        bool useW2 = !(r < Math.Max(outK, inN) / 2.0);
        bool conv = s.Length == 4, effective = Effective(c);
        var init = new List<(Tensor T, bool Zero)>();
        if (useW1) init.Add((Add(lokr_w1, adapter, outL, inM), !c.LycorisInit));
        else { init.Add((Add(lokr_w1_a, adapter, outL, r), !c.LycorisInit)); init.Add((Add(lokr_w1_b, adapter, r, inM), false)); }
        if (useW2) init.Add((conv ? Add(lokr_w2, adapter, outK, inN, s[2], s[3]) : Add(lokr_w2, adapter, outK, inN), c.LycorisInit));
        else if (conv && effective)
        {
            init.Add((Add(lokr_t2, adapter, r, r, s[2], s[3]), false));
            init.Add((Add(lokr_w2_a, adapter, r, outK), false));
            init.Add((Add(lokr_w2_b, adapter, r, inN), c.LycorisInit));
        }
        else
        {
            init.Add((Add(lokr_w2_a, adapter, outK, r), false));
            init.Add((Add(lokr_w2_b, adapter, r, conv ? inN * s[2] * s[3] : inN), c.LycorisInit));
        }
        foreach (var (t, zero) in init)
            if (zero && config.InitWeights) Zero(t); else Kaiming(t);
    }

    protected override Tensor Delta(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        Tensor P(AdapterSlots s) => s.Parameter(adapter);
        var w1 = lokr_w1.Contains(adapter) ? P(lokr_w1) : P(lokr_w1_a).matmul(P(lokr_w1_b));
        var w2 = lokr_w2.Contains(adapter) ? P(lokr_w2)
            : lokr_t2.Contains(adapter) ? torch.einsum("ijkl,ip,jr->prkl", P(lokr_t2), P(lokr_w2_a), P(lokr_w2_b))
            : P(lokr_w2_a).matmul(P(lokr_w2_b));
        // torch.kron(w1, w2), w1 (a, c) against w2 (b, d) or (b, d, kh, kw): (a·b, c·d[, kh, kw])
        var k = w2.dim() == 4
            ? torch.einsum("ij,klxy->ikjlxy", w1, w2).reshape(w1.shape[0] * w2.shape[0], w1.shape[1] * w2.shape[1], w2.shape[2], w2.shape[3])
            : torch.einsum("ij,kl->ikjl", w1, w2).reshape(w1.shape[0] * w2.shape[0], w1.shape[1] * w2.shape[1]);
        using var scale = Scaling(adapter).ToScalar();
        return k.mul(scale).reshape(BaseWeight.shape).MoveToOuterDisposeScope();
    }
}

/// LoKr on Linear and Conv2d layers, as PEFT's LoKrModel.
public sealed class LoKrMethod : LycorisMethod
{
    public static readonly LoKrMethod Instance = new();

    LoKrMethod() { }

    public override string Name => "LoKr";
    public override string PeftType => "LOKR";

    protected override LycorisLayer NewLayer(nn.Module<Tensor, Tensor> module) => new LoKrLayer(module);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (ReadCommon(json, new LoKrConfig
        {
            DecomposeBoth = json.Bool("decompose_both"),
            DecomposeFactor = (int)(json.Num("decompose_factor") ?? -1),
            LycorisInit = json["init_weights"] is JsonValue v && v.TryGetValue<string>(out var how) && how == "lycoris",
        }), null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (LoKrConfig)config;
        var o = WriteCommon(c);
        if (c.LycorisInit) o["init_weights"] = "lycoris";
        o["decompose_both"] = c.DecomposeBoth;
        o["decompose_factor"] = c.DecomposeFactor;
        o["rank_dropout_scale"] = false;
        return o;
    }
}
