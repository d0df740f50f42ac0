using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// Classification metrics over logits [N,K] and targets [N].
public static class Accuracy
{
    /// How many rows have their target among the k largest logits.
    public static long CorrectTopK(Tensor logits, Tensor targets, int k)
    {
        using var scope = NewDisposeScope();
        k = (int)Math.Min(k, logits.shape[1]);
        var top = logits.topk(k, dim: 1).indexes;
        return top.eq(targets.unsqueeze(1)).any(1).sum().item<long>();
    }

    public static double TopK(Tensor logits, Tensor targets, int k) =>
        (double)CorrectTopK(logits, targets, k) / Math.Max(1, logits.shape[0]);
}

/// DICE and IoU per class, averaged over images. For one image and class c with predicted set P
/// and true set T: DICE = 2|P∩T| / (|P| + |T|), IoU = |P∩T| / |P∪T|, and both are 1 when P and T are
/// both empty (nothing to find, nothing found). The means (MeanDice, MeanIoU = mIoU) average the
/// foreground classes 1..K-1; for a binary task they are the foreground scores. Background (class 0)
/// is still reported per class.
public sealed class SegmentationMeter
{
    readonly double[] dice, iou;
    long images;

    public int NumClasses { get; }

    public SegmentationMeter(int numClasses)
    {
        if (numClasses < 2) throw new ArgumentOutOfRangeException(nameof(numClasses), "segmentation needs at least 2 classes.");
        NumClasses = numClasses;
        dice = new double[numClasses];
        iou = new double[numClasses];
    }

    /// Adds predicted and true class-index masks [N,H,W] (any integer type).
    public void Add(Tensor predicted, Tensor target)
    {
        if (!predicted.shape.SequenceEqual(target.shape))
            throw new ArgumentException($"predicted mask shape [{string.Join(",", predicted.shape)}] differs from the target's [{string.Join(",", target.shape)}].");
        using var scope = NewDisposeScope();
        using Scalar one = 1.0, two = 2.0, none = 0;
        var n = predicted.shape[0];
        var p = predicted.reshape(n, -1);
        var t = target.reshape(n, -1);
        for (int c = 0; c < NumClasses; c++)
        {
            using Scalar cls = c;
            var pc = p.eq(cls);
            var tc = t.eq(cls);
            var inter = pc.logical_and(tc).sum(1).to(ScalarType.Float64);
            var ps = pc.sum(1).to(ScalarType.Float64);
            var ts = tc.sum(1).to(ScalarType.Float64);
            var union = ps + ts - inter;
            var empty = (ps + ts).eq(none);
            var d = (inter.mul(two) / (ps + ts).clamp_min(one)).masked_fill(empty, one);
            var j = (inter / union.clamp_min(one)).masked_fill(empty, one);
            dice[c] += d.sum().item<double>();
            iou[c] += j.sum().item<double>();
        }
        images += n;
    }

    public long Images => images;
    public double[] DicePerClass => dice.Select(v => images == 0 ? double.NaN : v / images).ToArray();
    public double[] IouPerClass => iou.Select(v => images == 0 ? double.NaN : v / images).ToArray();
    public double MeanDice => DicePerClass.Skip(1).Average();
    public double MeanIoU => IouPerClass.Skip(1).Average();

    /// Class indices from logits: [N,1,H,W] binary (logit > 0) or [N,K,H,W] (argmax).
    public static Tensor Predict(Tensor logits)
    {
        if (logits.shape[1] != 1) return logits.argmax(1);
        using Scalar zero = 0.0;
        return logits.squeeze(1).gt(zero).to(ScalarType.Int64);
    }

    /// One image pair's (DICE, IoU) for a binary mask, for tests and quick checks.
    public static (double Dice, double IoU) Binary(Tensor predicted, Tensor target)
    {
        var m = new SegmentationMeter(2);
        m.Add(predicted.unsqueeze(0), target.unsqueeze(0));
        return (m.MeanDice, m.MeanIoU);
    }
}
