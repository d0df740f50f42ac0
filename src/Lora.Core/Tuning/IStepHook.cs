using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// Work a tuning method must do around each optimisation step (AdaLoRA's rank allocation and
/// orthogonal regularisation). The training loop finds the hooks of the model it trains through
/// <see cref="StepHooks.Of"/>, so a user cannot forget to call them.
public interface IStepHook
{
    /// Called once before the first step; AdaLoRA's budget schedule needs the total step count.
    void Begin(long totalSteps);

    /// An extra term added to the loss before backward, or null.
    Tensor? ExtraLoss();

    /// Called after optimizer.step() and before zero_grad (gradients are still present), with the
    /// 1-based global step, as PEFT's update_and_allocate.
    void AfterOptimizerStep(long globalStep);
}

/// Associates step hooks with a model's root module without the module knowing about them.
public static class StepHooks
{
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<nn.Module, List<IStepHook>> table = new();

    public static void Attach(nn.Module root, IStepHook hook)
    {
        lock (table) table.GetOrCreateValue(root).Add(hook);
    }

    public static void Detach(nn.Module root, IStepHook hook)
    {
        lock (table) if (table.TryGetValue(root, out var l)) l.Remove(hook);
    }

    public static IReadOnlyList<IStepHook> Of(nn.Module root)
    {
        lock (table) return table.TryGetValue(root, out var l) ? l.ToArray() : Array.Empty<IStepHook>();
    }
}
