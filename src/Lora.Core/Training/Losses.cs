using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Lora.Core.Training;

/// Training losses beside the plain ones.
public static class Losses
{
    /// Mean cross-entropy of logits [B,K] against class indices [B], with label smoothing ε as
    /// PyTorch defines it: (1 − ε) · NLL(target) + ε · mean over the K classes of −log p.
    public static Tensor CrossEntropy(Tensor logits, Tensor targets, double smoothing)
    {
        if (smoothing == 0) return F.cross_entropy(logits, targets);
        using var scope = NewDisposeScope();
        var logp = F.log_softmax(logits, 1);
        var nll = logp.gather(1, targets.unsqueeze(1)).squeeze(1).neg();
        var uniform = logp.mean([1L]).neg();
        // held Scalars (HeldScalars: no temporary Scalar in a native call)
        using Scalar keep = 1 - smoothing, spread = smoothing;
        return nll.mul(keep).Plus(uniform.mul(spread)).mean().MoveToOuterDisposeScope();
    }
}
