using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// HRA around a Linear or a Conv2d, as PEFT's HRALinear / HRAConv2d: `hra_u.&lt;adapter&gt;` (features, r),
/// W' = W·H (a Conv2d's weight viewed as (out, in·k²)), applied as r rank-one updates W ← W − 2(W·u)uᵀ
/// (or one W − 2(W·U)Uᵀ with Gram-Schmidt) without forming H.
public sealed class HraLayer : WeightTransformLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots hra_u = new();
#pragma warning restore IDE1006
    readonly Dictionary<string, bool> gramSchmidt = new();

    public HraLayer(nn.Module<Tensor, Tensor> baseLayer) : base(nameof(HraLayer), baseLayer) => RegisterComponents();

    public override string Method => "HRA";
    public override TuningMethod Owner => HraMethod.Instance;

    public Parameter U(string adapter) => hra_u.Parameter(adapter);

    public void AddAdapter(string adapter, HraConfig config)
    {
        CheckNew(adapter);
        var n = Features;
        // more reflections than features add nothing, and Gram-Schmidt would divide by zero
        if (config.Rank > n) throw new ArgumentException($"HRA r = {config.Rank} is larger than the {n} input features of this {base_layer.GetType().Name}; lower r");
        var w = BaseWeight;
        Tensor u;
        using (torch.no_grad())
        {
            if (config.InitWeights && config.Rank % 2 == 0)
            {
                // PEFT's reset_hra_parameters: Kaiming-uniform halves, each column repeated
                var half = torch.zeros(n, config.Rank / 2, dtype: w.dtype, device: w.device);
                nn.init.kaiming_uniform_(half, a: Math.Sqrt(5));
                u = torch.repeat_interleave(half, 2, 1);
            }
            else
            {
                u = torch.empty(n, config.Rank, dtype: w.dtype, device: w.device);
                nn.init.kaiming_uniform_(u, a: Math.Sqrt(5));
            }
        }
        hra_u.AddParameter(adapter, new Parameter(u));
        gramSchmidt[adapter] = config.ApplyGs;
        Added(adapter);
    }

    /// The orthonormal reflection vectors of Gram-Schmidt (features, r), as PEFT's loop.
    static Tensor Orthonormal(Tensor u)
    {
        var cols = new List<Tensor> { u[.., 0] / u[.., 0].norm() };
        for (var i = 1; i < u.shape[1]; i++)
        {
            var v = u[.., i];
            foreach (var q in cols) v = v - q.dot(v) * q;
            cols.Add(v / v.norm());
        }
        return torch.stack(cols, 1);
    }

    protected override Tensor Transform(Tensor w, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var u = U(adapter);
        var x = w.to(u.dtype);
        if (gramSchmidt[adapter])
        {
            var q = Orthonormal(u);
            return (x - 2.0 * x.matmul(q).matmul(q.t())).MoveToOuterDisposeScope();
        }
        var unit = u / u.norm(0, keepdim: true);
        for (var i = 0; i < unit.shape[1]; i++)
        {
            var ui = unit[.., i..(i + 1)];
            x = x - 2.0 * x.matmul(ui).matmul(ui.t());
        }
        return x.MoveToOuterDisposeScope();
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [U(adapter)];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) => [("hra_u", U(adapter))];

    protected override void RemoveParameters(string adapter)
    {
        hra_u.Remove(adapter);
        gramSchmidt.Remove(adapter);
    }
}
