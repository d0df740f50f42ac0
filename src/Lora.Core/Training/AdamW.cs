using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// AdamW (Loshchilov & Hutter; PyTorch's update rule) over named parameters, with its state exposed
/// by name so a checkpoint can store and restore it bit for bit. Weight decay applies to parameters
/// with 2 or more dimensions (not to biases and norm scales, as timm does).
/// Training uses <see cref="FlatAdamW"/> (the same rule in a few large kernels per step); this
/// per-parameter form is the plain reference that FlatAdamW is property-tested against.
public sealed class AdamW
{
    readonly (string Name, Parameter P)[] parameters;
    readonly Dictionary<string, (Tensor M, Tensor V)> state = new();
    readonly double beta1, beta2, eps, weightDecay;

    public long StepCount { get; private set; }

    public AdamW(IEnumerable<(string Name, Parameter P)> parameters, double weightDecay, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        this.parameters = parameters.ToArray();
        this.weightDecay = weightDecay; this.beta1 = beta1; this.beta2 = beta2; this.eps = eps;
    }

    public void Step(double lr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(beta1, StepCount), bc2 = 1 - Math.Pow(beta2, StepCount);
        using var _ = no_grad();
        // Scalars held in locals: an implicit double → Scalar temporary can be finalized by the GC
        // while the native call still reads it (TorchSharp 0.107 does not keep it alive).
        using Scalar decay = 1 - lr * weightDecay, b1 = beta1, b1c = 1 - beta1, b2 = beta2, b2c = 1 - beta2,
            invSqrtBc2 = 1 / Math.Sqrt(bc2), epsilon = eps, stepSize = -lr / bc1;
        foreach (var (name, p) in parameters)
        {
            var g = p.grad;
            if (g is null) continue;
            if (!state.TryGetValue(name, out var s))
                state[name] = s = (zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope());
            using var scope = NewDisposeScope();
            if (weightDecay != 0 && p.dim() >= 2) p.mul_(decay);
            s.M.mul_(b1).add_(g, alpha: b1c);
            s.V.mul_(b2).addcmul_(g, g, value: b2c);
            var denom = s.V.sqrt().mul_(invSqrtBc2).add_(epsilon);
            p.addcdiv_(s.M, denom, value: stepSize);
        }
    }

    /// exp_avg.NAME and exp_avg_sq.NAME for every parameter that has state.
    public IEnumerable<(string Name, Tensor Value)> State() =>
        state.SelectMany(kv => new[] { ($"exp_avg.{kv.Key}", kv.Value.M), ($"exp_avg_sq.{kv.Key}", kv.Value.V) });

    public void Load(long stepCount, IReadOnlyDictionary<string, Tensor> tensors)
    {
        StepCount = stepCount;
        foreach (var (name, p) in parameters)
            if (tensors.TryGetValue($"exp_avg.{name}", out var m) && tensors.TryGetValue($"exp_avg_sq.{name}", out var v))
                state[name] = (m.to(p.device).DetachFromDisposeScope(), v.to(p.device).DetachFromDisposeScope());
    }
}
