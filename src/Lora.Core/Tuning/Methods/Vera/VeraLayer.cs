using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// VeRA around a Linear, as PEFT's vera.Linear: y = base(x) + λ_b ⊙ B[:out] (λ_d ⊙ A[:, :in] x),
/// with the shared frozen A and B (not this layer's parameters) and the trained
/// `vera_lambda_b.&lt;adapter&gt;` (out, zero at first) and `vera_lambda_d.&lt;adapter&gt;` (r, d_initial).
public sealed class VeraLayer : TunerLayer
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots vera_lambda_b = new();
    public AdapterSlots vera_lambda_d = new();
#pragma warning restore IDE1006
    readonly Dictionary<string, (Tensor A, Tensor B, double Dropout)> shared = new();

    public VeraLayer(Linear baseLayer) : base(nameof(VeraLayer), baseLayer) => RegisterComponents();

    public Linear Base => (Linear)base_layer;
    public override string Method => "VeRA";
    public override TuningMethod Owner => VeraMethod.Instance;
    public override IReadOnlyList<string> AdapterNames => shared.Keys.ToList();
    public override Parameter BaseWeight => Base.weight!;

    public Parameter LambdaB(string adapter) => vera_lambda_b.Parameter(adapter);
    public Parameter LambdaD(string adapter) => vera_lambda_d.Parameter(adapter);

    /// A[:, :in] and B[:out, :] of the shared matrices.
    public (Tensor A, Tensor B) Sliced(string adapter)
    {
        var (a, b, _) = shared[adapter];
        return (a.narrow(1, 0, Base.in_features), b.narrow(0, 0, Base.out_features));
    }

    public void AddAdapter(string adapter, Tensor a, Tensor b, VeraConfig c)
    {
        if (shared.ContainsKey(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
        if (a.shape[1] < Base.in_features || b.shape[0] < Base.out_features)
            throw new ArgumentException($"the shared VeRA matrices ({a.shape[1]} in, {b.shape[0]} out) are smaller than this Linear({Base.in_features}, {Base.out_features})");
        var w = BaseWeight;
        var lb = new Parameter(c.InitWeights ? torch.zeros(Base.out_features, dtype: w.dtype, device: w.device) : torch.ones(Base.out_features, dtype: w.dtype, device: w.device));
        var ld = new Parameter(c.InitWeights ? torch.full(c.Rank, c.DInitial, dtype: w.dtype, device: w.device) : torch.randn(c.Rank, dtype: w.dtype, device: w.device));
        vera_lambda_b.AddParameter(adapter, lb);
        vera_lambda_d.AddParameter(adapter, ld);
        shared[adapter] = (a, b, c.Dropout);
    }

    public override Tensor DeltaWeight(string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var (a, b) = Sliced(adapter);
        var lb = LambdaB(adapter).detach().unsqueeze(-1);
        var ld = LambdaD(adapter).detach().unsqueeze(-1);
        return (lb * b).matmul(ld * a).to(BaseWeight.dtype).MoveToOuterDisposeScope();
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => [LambdaD(adapter), LambdaB(adapter)];

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks) =>
        [("vera_lambda_b", LambdaB(adapter)), ("vera_lambda_d", LambdaD(adapter))];

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var (a, b) = Sliced(adapter);
        var xd = Dropout(x, shared[adapter].Dropout);
        var h = nn.functional.linear(xd, In(a, xd)) * In(LambdaD(adapter), xd);
        var y = nn.functional.linear(h, In(b, xd)) * In(LambdaB(adapter), xd);
        return AddInResultDtype(result, y).MoveToOuterDisposeScope();
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        vera_lambda_b.Remove(adapter);
        vera_lambda_d.Remove(adapter);
        shared.Remove(adapter);
    }
}
