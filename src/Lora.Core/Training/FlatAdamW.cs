using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// AdamW (PyTorch's update rule; weight decay on parameters with 2 or more dimensions, as timm) over parameters re-homed into one
/// contiguous buffer per (device, dtype): every parameter becomes a view of its group's buffer, and
/// its gradient a view of a matching gradient buffer. A step is then a handful of large kernels per
/// group instead of ~9 small ones per parameter (TorchSharp has no torch._foreach_* multi-tensor
/// kernels, which is what PyTorch's AdamW uses). Within a group, parameters with 2 or more dimensions
/// come first, so weight decay is one op on a prefix of the buffer.
///
/// Low-precision parameters (bf16, fp16; see <see cref="MixedPrecision"/>) get master weights: the
/// group keeps a float32 copy of its buffer and float32 moments; a step updates the master from the
/// gradients (cast to float32) and writes the rounded master back into the parameters. Updates far
/// below a bf16 ulp (lr 1e-4 on a weight of 1 is 1/80 of one) then accumulate instead of vanishing.
///
/// Differences from torch.optim.AdamW (and the per-parameter reference the tests compare it with): gradients are zeroed (<see cref="ZeroGrad"/>), never set to
/// null, so a parameter that got no gradient in a step is updated as if its gradient were zero
/// (AdamW skips it). Construct it after the model has reached its device and dtype: moving or
/// casting the model afterwards gives the parameters new storage and detaches them from the buffers.
public sealed class FlatAdamW : IDisposable
{
    sealed class Group
    {
        public required Tensor Data, Grad, M, V;
        /// float32 master weights of a low-precision group; null when Data is already float32/float64
        public Tensor? Master;
        public long DecayNumel;
        /// this group's learning rate over the step's (LoRA+ trains lora_B at a ratio of it)
        public double LrScale = 1;
    }

    readonly (string Name, Parameter P, Group G, long Offset)[] parameters;
    readonly Group[] groups;
    readonly double beta1, beta2, eps, weightDecay;

    public long StepCount { get; private set; }

    /// <paramref name="masters"/>: float32 values to start the master weights of low-precision
    /// parameters from, by name (what <see cref="MixedPrecision.Apply"/> returns; copied). A
    /// low-precision parameter without one starts from its own (rounded) value.
    public FlatAdamW(IEnumerable<(string Name, Parameter P)> parameters, double weightDecay, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
                     IReadOnlyDictionary<string, Tensor>? masters = null, IReadOnlyDictionary<string, double>? lrScales = null)
    {
        this.weightDecay = weightDecay; this.beta1 = beta1; this.beta2 = beta2; this.eps = eps;
        var list = parameters.ToArray();
        var placed = new List<(string, Parameter, Group, long)>();
        var gs = new List<Group>();
        using var _ = no_grad();
        double ScaleOf(string name) => lrScales is not null && lrScales.TryGetValue(name, out var f) ? f : 1;
        foreach (var bucket in list.GroupBy(p => (p.P.device.ToString(), p.P.dtype, ScaleOf(p.Name))))
        {
            // decayed (matrices) first, then vectors; stable within each part
            var ordered = bucket.Where(p => p.P.dim() >= 2).Concat(bucket.Where(p => p.P.dim() < 2)).ToArray();
            long total = ordered.Sum(p => p.P.numel());
            var first = ordered[0].P;
            var stateType = IsLowPrecision(first.dtype) ? ScalarType.Float32 : first.dtype;
            var g = new Group
            {
                Data = empty(total, dtype: first.dtype, device: first.device).DetachFromDisposeScope(),
                Grad = zeros(total, dtype: first.dtype, device: first.device).DetachFromDisposeScope(),
                M = zeros(total, dtype: stateType, device: first.device).DetachFromDisposeScope(),
                V = zeros(total, dtype: stateType, device: first.device).DetachFromDisposeScope(),
                DecayNumel = ordered.Where(p => p.P.dim() >= 2).Sum(p => p.P.numel()),
                LrScale = bucket.Key.Item3,
            };
            long offset = 0;
            foreach (var (name, p) in ordered)
            {
                long n = p.numel();
                using var slot = g.Data.narrow(0, offset, n).view(p.shape);
                slot.copy_(p);
                p.set_(slot);
                using var gslot = g.Grad.narrow(0, offset, n).view(p.shape);
                if (p.grad is Tensor old) gslot.copy_(old);
                p.grad = gslot;
                placed.Add((name, p, g, offset));
                offset += n;
            }
            if (stateType != first.dtype)
            {
                g.Master = g.Data.to(stateType).DetachFromDisposeScope();
                foreach (var (name, p, _, at) in placed.Where(x => x.Item3 == g))
                    if (masters is not null && masters.TryGetValue(name, out var exact))
                    {
                        if (!exact.shape.SequenceEqual(p.shape))
                            throw new ArgumentException($"the master weight given for '{name}' has shape [{string.Join(",", exact.shape)}], the parameter [{string.Join(",", p.shape)}]");
                        using var slot = g.Master.narrow(0, at, p.numel());
                        slot.copy_(exact.reshape(-1));
                    }
            }
            gs.Add(g);
        }
        this.parameters = placed.ToArray();
        groups = gs.ToArray();
    }

    static bool IsLowPrecision(ScalarType t) => t is ScalarType.BFloat16 or ScalarType.Float16;

    /// The number of trainable elements (all groups).
    public long Numel => groups.Sum(g => g.Data.numel());

    public void Step(double lr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(beta1, StepCount), bc2 = 1 - Math.Pow(beta2, StepCount);
        using var _ = no_grad();
        using Scalar b1 = beta1, b1c = 1 - beta1, b2 = beta2, b2c = 1 - beta2, invSqrtBc2 = 1 / Math.Sqrt(bc2), epsilon = eps;
        foreach (var g in groups)
        {
            using var scope = NewDisposeScope();
            // torch.optim.AdamW per parameter group: decay and step both with the group's learning rate
            using Scalar decay = 1 - lr * g.LrScale * weightDecay, stepSize = -lr * g.LrScale / bc1;
            var weights = g.Master ?? g.Data;
            var grad = g.Master is null ? g.Grad : g.Grad.to(ScalarType.Float32);
            if (weightDecay != 0 && g.DecayNumel > 0) weights.narrow(0, 0, g.DecayNumel).mul_(decay);
            g.M.mul_(b1).add_(grad, alpha: b1c);
            g.V.mul_(b2).addcmul_(grad, grad, value: b2c);
            var denom = g.V.sqrt().mul_(invSqrtBc2).PlusInPlace(epsilon);
            weights.addcdiv_(g.M, denom, value: stepSize);
            if (g.Master is not null) g.Data.copy_(g.Master);
        }
    }

    long zeroGrads;

    /// Zeroes every gradient in place (one kernel per group); the gradients stay views of the buffer.
    /// That they still are is checked at the first call and every 64th after: the check costs two
    /// native calls per parameter, host work a step would otherwise not do (a replaced gradient stays
    /// replaced, so it is still found).
    public void ZeroGrad()
    {
        if (zeroGrads++ % 64 == 0)
            foreach (var (_, p, g, offset) in parameters)
            {
                using var grad = p.grad;
                if (grad is null || grad.storage_offset() != offset)
                    throw new InvalidOperationException("a parameter's gradient was replaced (zero_grad(set_to_none) or an assignment); FlatAdamW needs the gradients it allocated. Zero them with FlatAdamW.ZeroGrad().");
            }
        foreach (var g in groups) g.Grad.zero_();
    }

    /// Scales all gradients so that their global 2-norm is at most <paramref name="maxNorm"/>, as
    /// torch.nn.utils.clip_grad_norm_ (coefficient max/(norm + 1e-6), capped at 1), without reading the
    /// norm back to the host. Returns the norm before clipping as a 0-dim tensor on the device.
    public Tensor ClipGradNorm(double maxNorm)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        // low-precision gradients are summed in float32: a bf16 sum of squares loses the small ones
        var norms = groups.Select(g => (g.Master is null ? g.Grad : g.Grad.to(float32)).norm().to(float32)).ToArray();
        var total = norms.Length == 1 ? norms[0] : stack(norms).norm();
        using Scalar max = maxNorm, tiny = 1e-6, one = 1.0;
        var coef = total.Plus(tiny).reciprocal_().mul_(max).clamp_max_(one);
        foreach (var g in groups) g.Grad.mul_(coef.to(g.Grad.dtype));
        return total.MoveToOuterDisposeScope();
    }

    /// exp_avg.NAME and exp_avg_sq.NAME for every parameter (views of the state buffers), as
    /// torch.optim.AdamW's state names, and master.NAME (float32) for every parameter with master weights.
    public IEnumerable<(string Name, Tensor Value)> State() =>
        (StepCount == 0 ? [] : parameters.SelectMany(x => new[]
        {
            ($"exp_avg.{x.Name}", x.G.M.narrow(0, x.Offset, x.P.numel()).view(x.P.shape)),
            ($"exp_avg_sq.{x.Name}", x.G.V.narrow(0, x.Offset, x.P.numel()).view(x.P.shape)),
        })).Concat(MasterWeights().Select(m => ($"master.{m.Name}", m.Value)));

    /// The float32 master weight of every low-precision parameter, by name (views of the master buffers).
    public IEnumerable<(string Name, Tensor Value)> MasterWeights() =>
        parameters.Where(x => x.G.Master is not null)
                  .Select(x => (x.Name, x.G.Master!.narrow(0, x.Offset, x.P.numel()).view(x.P.shape)));

    /// Restores the step count, the moments and the master weights. Call it after the parameters
    /// themselves were loaded: a master missing from <paramref name="tensors"/> (a checkpoint of a
    /// float32 run) is taken from its parameter.
    public void Load(long stepCount, IReadOnlyDictionary<string, Tensor> tensors)
    {
        StepCount = stepCount;
        using var _ = no_grad();
        foreach (var (name, p, g, offset) in parameters)
        {
            if (g.Master is not null)
            {
                using var slot = g.Master.narrow(0, offset, p.numel());
                if (tensors.TryGetValue($"master.{name}", out var w)) slot.copy_(w.reshape(-1));
                else { using var flat = p.detach().reshape(-1); slot.copy_(flat); }
            }
            if (tensors.TryGetValue($"exp_avg.{name}", out var m) && tensors.TryGetValue($"exp_avg_sq.{name}", out var v))
            {
                using var ms = g.M.narrow(0, offset, p.numel());
                using var vs = g.V.narrow(0, offset, p.numel());
                ms.copy_(m.reshape(-1));
                vs.copy_(v.reshape(-1));
            }
        }
    }

    public void Dispose()
    {
        foreach (var g in groups) { g.M.Dispose(); g.V.Dispose(); g.Data.Dispose(); g.Grad.Dispose(); g.Master?.Dispose(); }
    }
}
