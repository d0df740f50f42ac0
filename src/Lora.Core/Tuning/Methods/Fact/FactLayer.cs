using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// FacT around a Linear of out = m_o·d and in = m_i·d: its ΔW is m_o × m_i slices of d×d, slice
/// (j, l) = s · V Σ_jl U with the shared U, V (<see cref="FactFactors"/>, not this layer's
/// parameters): ΔW = s · (I ⊗ V) Σ (I ⊗ U), Σ of (m_o·r × m_i·r). With tensor-train Σ is this
/// layer's `fact_s.&lt;adapter&gt;` (the reference's q/k/v/proj/fc1/fc2_FacTs weights stacked: nn.Linear
/// initialisation); with Tucker it is built from the shared core and this layer's columns of P.
public sealed class FactLayer : TunerLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots fact_s = new();
#pragma warning restore IDE1006
    readonly Dictionary<string, (FactFactors F, FactConfig C, int Offset)> adapters = new();

    public FactLayer(Linear baseLayer) : base(nameof(FactLayer), baseLayer) => RegisterComponents();

    public Linear Base => (Linear)base_layer;
    public override string Method => "FacT";
    public override TuningMethod Owner => FactMethod.Instance;
    public override IReadOnlyList<string> AdapterNames => adapters.Keys.ToList();
    public override Parameter BaseWeight => Base.weight!;

    /// m_o, m_i: how many d-wide slices the output and the input have.
    public (long Out, long In) Slices(long width) => (Base.out_features / width, Base.in_features / width);

    /// The number of d×d slices (the Tucker factor P's columns this layer takes).
    public static int SliceCount(Linear l, long width) => (int)(l.out_features / width * (l.in_features / width));

    public void AddAdapter(string adapter, FactFactors f, FactConfig c, int offset)
    {
        if (adapters.ContainsKey(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        var d = f.Width;
        if (Base.in_features % d != 0 || Base.out_features % d != 0)
            throw new ArgumentException($"FacT slices ΔW into {d}×{d} blocks; this Linear({Base.in_features}, {Base.out_features}) is not made of them");
        var (mo, mi) = Slices(d);
        if (c.Variant == FactVariant.Tt)
        {
            var w = BaseWeight;
            var s = torch.empty(mo * c.Rank, mi * c.Rank, dtype: w.dtype, device: w.device);
            using (torch.no_grad()) nn.init.kaiming_uniform_(s, a: Math.Sqrt(5)); // nn.Linear(r, r) per slice: bound 1/√(m_i·r)
            fact_s.AddParameter(adapter, new Parameter(s));
        }
        adapters[adapter] = (f, c, offset);
    }

    /// Σ, (m_o·r × m_i·r) in Linear-weight orientation.
    public Tensor Sigma(string adapter)
    {
        var (f, c, offset) = adapters[adapter];
        if (c.Variant == FactVariant.Tt) return fact_s.Parameter(adapter);
        using var scope = torch.NewDisposeScope();
        var (mo, mi) = Slices(f.Width);
        long r = c.Rank;
        var blocks = f.TuckerSlices(offset, (int)(mo * mi));       // [t = j·m_i + l, r, r]
        return blocks.reshape(mo, mi, r, r).permute(0, 2, 1, 3).reshape(mo * r, mi * r).MoveToOuterDisposeScope();
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var (f, c, _) = adapters[adapter];
        var (mo, mi) = Slices(f.Width);
        long r = c.Rank, d = f.Width;
        var s4 = Sigma(adapter).detach().reshape(mo, r, mi, r);
        var dw = torch.einsum("ck,jklm,mq->jclq", f.FacTv.detach(), s4, f.FacTu.detach()).reshape(mo * d, mi * d) * c.Scale;
        return dw.to(BaseWeight.dtype).MoveToOuterDisposeScope();
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter)
    {
        var (f, c, _) = adapters[adapter];
        var own = c.Variant == FactVariant.Tt ? new[] { fact_s.Parameter(adapter) } : [];
        return own.Concat(f.Named().Select(x => x.Value));
    }

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) =>
        adapters[adapter].C.Variant == FactVariant.Tt ? [("fact_s", fact_s.Parameter(adapter))] : [];

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var (f, c, _) = adapters[adapter];
        var (mo, mi) = Slices(f.Width);
        long r = c.Rank, d = f.Width;
        var lead = x.shape[..^1];
        var u = nn.functional.linear(x.reshape([.. lead, mi, d]), In(f.FacTu, x)).reshape([.. lead, mi * r]);
        var h = Dropout(nn.functional.linear(u, In(Sigma(adapter), x)), c.Dropout);
        var y = nn.functional.linear(h.reshape([.. lead, mo, r]), In(f.FacTv, x)).reshape([.. lead, mo * d]);
        using var s = c.Scale.ToScalar();
        return AddInResultDtype(result, y * s).MoveToOuterDisposeScope();
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        if (fact_s.Contains(adapter)) fact_s.Remove(adapter);
        adapters.Remove(adapter);
    }
}
