using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// BOFT around a Linear or a Conv2d, as PEFT's boft layers: `boft_R.&lt;adapter&gt;` (factors, blocks,
/// b, b), whose skew-symmetric parts 0.5(A − Aᵀ) give exact Cayley blocks R = (I − S)(I + S)⁻¹, and
/// `boft_s.&lt;adapter&gt;` ((out, 1) for a Linear, (1, out) for a Conv2d, as PEFT). Factor i is
/// Pᵢ·block_diag(Rᵢ)·Pᵢᵀ with PEFT's block_butterfly_perm Pᵢ (the identity for i = 0), M = M_last ⋯ M₀,
/// and W' = (M·Wᵀ)ᵀ ⊙ s, applied here factor by factor (gather, blocks, gather) without forming M.
public sealed class BoftLayer : WeightTransformLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots boft_R = new();
    public AdapterSlots boft_s = new();
#pragma warning restore IDE1006
    readonly Dictionary<string, (long[][] Perms, long[][] Inverses, double Dropout)> options = new();

    public BoftLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(BoftLayer), baseLayer) => RegisterComponents();

    public override string Method => "BOFT";
    public override TuningMethod Owner => BoftMethod.Instance;

    public Parameter R(string adapter) => boft_R.Parameter(adapter);
    public Parameter S(string adapter) => boft_s.Parameter(adapter);

    public void AddAdapter(string adapter, BoftConfig config)
    {
        CheckNew(adapter);
        var n = Features;
        var (d, b, error) = config.Resolve(n);
        if (error is not null) throw new ArgumentException($"BOFT: {error}");
        var m = config.ButterflyFactor - 1;
        if ((long)config.ButterflyFactor * d * b * b > 1L << 26)
            throw new ArgumentException($"BOFT blocks of {b} on {n} features would need {(long)config.ButterflyFactor * d * b * b} parameters; lower boft_block_size");
        var perms = Enumerable.Range(0, m + 1).Select(i => ButterflyPerm((int)n, d >> i, b / 2, m)).ToArray();
        var inverses = perms.Select(p => { var inv = new long[p.Length]; for (var k = 0; k < p.Length; k++) inv[p[k]] = k; return inv; }).ToArray();
        var w = BaseWeight;
        var r = new Parameter(torch.zeros([m + 1, d, b, b], dtype: w.dtype, device: w.device));
        long outDim = w.shape[0];
        var s = new Parameter(torch.ones(base_layer is Conv2d ? [1, outDim] : [outDim, 1], dtype: w.dtype, device: w.device));
        if (!config.InitWeights)
        {
            using var _ = torch.no_grad();
            nn.init.normal_(r, 0.0, 0.1);
            nn.init.normal_(s, 1.0, 0.1);
        }
        boft_R.AddParameter(adapter, r);
        boft_s.AddParameter(adapter, s);
        options[adapter] = (perms, inverses, config.Dropout);
        Added(adapter);
    }

    /// PEFT's block_butterfly_perm(n, b, r, n_butterfly_factor): within each chunk of n/b features,
    /// runs of r taken at even positions first, then odd ones.
    public static long[] ButterflyPerm(int n, int blocks, int r, int factorsBeyondFirst)
    {
        var indices = Enumerable.Range(0, n).Select(i => (long)i).ToArray();
        if (factorsBeyondFirst == 0) return indices;
        if ((long)blocks * r * 2 > n) throw new ArgumentException("BOFT: invalid number of blocks for the butterfly");
        var chunk = n / blocks;
        var step = chunk / r;
        var positions = Enumerable.Range(0, step).Where(p => p % 2 == 0).Concat(Enumerable.Range(0, step).Where(p => p % 2 == 1)).ToArray();
        var order = new int[chunk];
        for (var i = 0; i < positions.Length; i++)
            for (var j = 0; j < r; j++) order[i * r + j] = positions[i] * r + j;
        var result = new long[n];
        for (var start = 0; start < n; start += chunk)
            for (var k = 0; k < chunk; k++) result[start + k] = indices[start + order[k]];
        return result;
    }

    /// The orthogonal blocks (factors, blocks, b, b) of an adapter, with PEFT's dropout in training.
    public Tensor Rotations(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var a = R(adapter);
        var (f, d, b) = (a.shape[0], a.shape[1], a.shape[2]);
        var flat = a.view(f * d, b, b);
        var skew = 0.5 * (flat - flat.transpose(1, 2));
        var eye = torch.eye(b, dtype: a.dtype, device: a.device).expand(f * d, b, b);
        var rot = torch.linalg.solve(eye + skew, eye - skew).view(f, d, b, b);
        var p = options[adapter].Dropout;
        if (training && p > 0)
        {
            // PEFT's MultiplicativeDropoutLayer: one random factor, ⌊p·D⌋ of its blocks
            var dropped = (long)(p * d);
            var mask = torch.cat([torch.ones(dropped, dtype: a.dtype, device: a.device), torch.zeros(d - dropped, dtype: a.dtype, device: a.device)]);
            mask = mask[torch.randperm(d, device: a.device)].view(d, 1, 1);
            var full = torch.zeros([f, d, 1, 1], dtype: a.dtype, device: a.device);
            full[torch.randint(0, f, [1]).ToInt64()] = mask;
            rot = (1.0 - full) * rot + full * torch.eye(b, dtype: a.dtype, device: a.device);
        }
        return rot.MoveToOuterDisposeScope();
    }

    protected override Tensor Transform(Tensor w, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var rot = Rotations(adapter);
        var (perms, inverses, _) = options[adapter];
        var x = w.to(rot.dtype);
        long rows = x.shape[0], d = rot.shape[1], b = rot.shape[2];
        // W·Mᵢᵀ with Mᵢ = Pᵢ·B·Pᵢᵀ: columns gathered by Pᵢ⁻¹, B applied blockwise, gathered back by Pᵢ
        for (var i = 0; i < perms.Length; i++)
        {
            var v = x.index_select(1, torch.tensor(inverses[i], device: x.device)).reshape(rows, d, b);
            var z = torch.einsum("orb,rcb->orc", v, rot[i]).reshape(rows, d * b);
            x = z.index_select(1, torch.tensor(perms[i], device: x.device));
        }
        var s = S(adapter);
        return (x * (base_layer is Conv2d ? s.t() : s)).MoveToOuterDisposeScope();
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [R(adapter), S(adapter)];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) =>
        [("boft_R", R(adapter)), ("boft_s", S(adapter))];

    protected override void RemoveParameters(string adapter)
    {
        boft_R.Remove(adapter);
        boft_s.Remove(adapter);
        options.Remove(adapter);
    }
}
