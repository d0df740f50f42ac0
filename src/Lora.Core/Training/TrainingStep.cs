using Lora.Core.Tuning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// The optimisation step shared by <see cref="Trainer"/> and <see cref="Benchmark"/>, so that what is
/// timed is what trains: the tuning method's extra loss, backward, gradient clipping on the device,
/// <see cref="FlatAdamW"/>, the step hooks, and zeroing of the gradients. Nothing in it reads a
/// value back to the host (the caller decides when to look at the loss).
public sealed class TrainingStep : IDisposable
{
    public FlatAdamW Optimizer { get; }
    public IReadOnlyList<IStepHook> Hooks { get; }
    public (string name, Parameter parameter)[] Trainable { get; }
    readonly double clipGradNorm;

    /// Prepares the model's trainable parameters (requires_grad = true) for training. Call it after
    /// the model is on its device and in its precision (see <see cref="MixedPrecision.Apply"/>, whose
    /// result is <paramref name="masters"/>: the float32 weights the optimiser's masters start from).
    public TrainingStep(nn.Module model, double weightDecay, double beta1, double beta2, double eps, double clipGradNorm,
                        IReadOnlyDictionary<string, Tensor>? masters = null)
    {
        Trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToArray();
        if (Trainable.Length == 0)
            throw new InvalidOperationException("the model has no trainable parameters (none has requires_grad = true); nothing to train.");
        Optimizer = new FlatAdamW(Trainable.Select(p => (p.name, p.parameter)), weightDecay, beta1, beta2, eps, masters, LoraPlus.LearningRateScales(model, Trainable));
        Hooks = StepHooks.Of(model);
        this.clipGradNorm = clipGradNorm;
    }

    public TrainingStep(nn.Module model, TrainOptions o, IReadOnlyDictionary<string, Tensor>? masters = null)
        : this(model, o.WeightDecay, o.Beta1, o.Beta2, o.Epsilon, o.ClipGradNorm, masters) { }

    /// The loss plus every hook's extra term (AdaLoRA's orthogonal regulariser).
    public Tensor WithExtraLoss(Tensor loss)
    {
        foreach (var h in Hooks)
            if (h.ExtraLoss() is Tensor extra) loss = loss.Plus(extra);
        return loss;
    }

    /// backward, clip, AdamW step at <paramref name="lr"/>. Then call <see cref="AfterStep"/>.
    public void BackwardAndStep(Tensor loss, double lr)
    {
        loss.backward();
        ClipAndStep(lr);
    }

    /// Clip the gradients gathered so far (one batch, or several accumulated) and take the AdamW step.
    public void ClipAndStep(double lr)
    {
        if (clipGradNorm > 0) Optimizer.ClipGradNorm(clipGradNorm).Dispose();
        Optimizer.Step(lr);
    }

    /// The hooks with the 1-based <paramref name="globalStep"/> (gradients still present), then zero
    /// gradients. Call it outside the step's dispose scope: a hook may keep tensors across steps by
    /// moving them to "the outer scope", which must not be the step's.
    public void AfterStep(long globalStep)
    {
        foreach (var h in Hooks) h.AfterOptimizerStep(globalStep);
        Optimizer.ZeroGrad();
    }

    public void Dispose() => Optimizer.Dispose();
}
