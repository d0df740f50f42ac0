using Lora.Core.Data;
using Lora.Core.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Lora.Core.Training;

/// Forward passes, losses and evaluation passes shared by the trainer and by users.
public static class Evaluator
{
    static Evaluator() => NativeWorkarounds.Apply();

    public static EvalMetrics Classification(nn.Module<Tensor, Tensor> model, ImageDataset data, int batchSize = 64,
        Transforms? transforms = null, string device = "cpu", Precision precision = Precision.Float32)
    {
        var loader = new DataLoader(data, batchSize, shuffle: false, seed: 0, (transforms ?? Transforms.None).ForEvaluation(), torch.device(device));
        return Classification(model, loader, InputType(precision));
    }

    public static EvalMetrics Segmentation(nn.Module<Tensor, Tensor> model, SegmentationDataset data, int batchSize = 32,
        Transforms? transforms = null, string device = "cpu", Precision precision = Precision.Float32, bool useBoxPrompts = true)
    {
        var loader = new DataLoader(data, batchSize, shuffle: false, seed: 0, (transforms ?? Transforms.None).ForEvaluation(), torch.device(device));
        return Segmentation(model, loader, data.NumClasses, InputType(precision), useBoxPrompts);
    }

    internal static ScalarType? InputType(Precision p) => p == Precision.BFloat16 ? ScalarType.BFloat16 : null;

    internal static EvalMetrics Classification(nn.Module<Tensor, Tensor> model, DataLoader loader, ScalarType? inputType)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            double loss = 0; long top1 = 0, top5 = 0; int n = 0;
            foreach (var batch in loader.Epoch(0))
                using (batch)
                {
                    using var scope = NewDisposeScope();
                    var logits = ClassifierForward(model, batch, inputType);
                    loss += F.cross_entropy(logits, batch.Targets, reduction: nn.Reduction.Sum).item<float>();
                    top1 += Accuracy.CorrectTopK(logits, batch.Targets, 1);
                    top5 += Accuracy.CorrectTopK(logits, batch.Targets, 5);
                    n += batch.Size;
                }
            return new EvalMetrics(n, loss / n, Top1: (double)top1 / n, Top5: (double)top5 / n);
        }
        finally { model.train(wasTraining); }
    }

    internal static EvalMetrics Segmentation(nn.Module<Tensor, Tensor> model, DataLoader loader, int numClasses, ScalarType? inputType, bool useBoxes)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            var meter = new SegmentationMeter(numClasses);
            double loss = 0; int n = 0;
            foreach (var batch in loader.Epoch(0))
                using (batch)
                {
                    using var scope = NewDisposeScope();
                    var logits = SegmenterForward(model, batch, inputType, useBoxes, numClasses);
                    loss += SegmentationLoss(logits, batch.Targets).item<float>() * batch.Size;
                    meter.Add(SegmentationMeter.Predict(logits), batch.Targets);
                    n += batch.Size;
                }
            return new EvalMetrics(n, loss / n, Dice: meter.MeanDice, MIoU: meter.MeanIoU,
                DicePerClass: meter.DicePerClass, IouPerClass: meter.IouPerClass);
        }
        finally { model.train(wasTraining); }
    }

    /// Logits [B,K] as float32.
    internal static Tensor ClassifierForward(nn.Module<Tensor, Tensor> model, Batch batch, ScalarType? inputType)
    {
        var x = inputType is ScalarType t ? batch.Inputs.to(t) : batch.Inputs;
        var logits = model.forward(x);
        if (logits.dim() != 2)
            throw new InvalidOperationException($"a classifier must return logits [batch, classes]; this model returned [{string.Join(",", logits.shape)}].");
        return logits.dtype == ScalarType.Float32 ? logits : logits.to(ScalarType.Float32);
    }

    /// Mask logits [B,1,H,W] or [B,K,H,W] as float32 at the mask's resolution. A promptable
    /// segmenter gets the batch's box prompts.
    internal static Tensor SegmenterForward(nn.Module<Tensor, Tensor> model, Batch batch, ScalarType? inputType, bool useBoxes, int numClasses)
    {
        var x = inputType is ScalarType t ? batch.Inputs.to(t) : batch.Inputs;
        var logits = model is IPromptableSegmenter s && useBoxes && batch.Boxes is not null
            ? s.Segment(x, batch.Boxes, null, null)
            : model.forward(x);
        if (logits.dim() != 4)
            throw new InvalidOperationException($"a segmenter must return mask logits [batch, 1 or classes, H, W]; this model returned [{string.Join(",", logits.shape)}].");
        if (logits.shape[1] == 1 && numClasses > 2)
            throw new InvalidOperationException($"the data set has {numClasses} classes but the model returns one mask channel; it needs {numClasses}.");
        if (logits.shape[1] != 1 && logits.shape[1] != numClasses)
            throw new InvalidOperationException($"the model returns {logits.shape[1]} mask channels for a data set of {numClasses} classes.");
        if (logits.dtype != ScalarType.Float32) logits = logits.to(ScalarType.Float32);
        long h = batch.Targets.shape[1], w = batch.Targets.shape[2];
        if (logits.shape[2] != h || logits.shape[3] != w)
            logits = F.interpolate(logits, [h, w], mode: InterpolationMode.Bilinear, align_corners: false);
        return logits;
    }

    /// Binary (one channel): BCE with logits + soft DICE loss. K channels: cross-entropy + soft
    /// DICE loss over the foreground classes.
    public static Tensor SegmentationLoss(Tensor logits, Tensor masks)
    {
        using Scalar one = 1.0, two = 2.0;
        if (logits.shape[1] == 1)
        {
            var t = masks.unsqueeze(1).to(ScalarType.Float32);
            var bce = F.binary_cross_entropy_with_logits(logits, t);
            var p = logits.sigmoid();
            var inter = (p * t).sum([1, 2, 3]);
            var den = p.sum([1, 2, 3]).Plus(t.sum([1, 2, 3]));
            return bce.Plus((inter.mul(two).PlusInPlace(one) / den.Plus(one)).neg().PlusInPlace(one).mean());
        }
        else
        {
            long k = logits.shape[1];
            var ce = F.cross_entropy(logits, masks);
            var p = logits.softmax(1);
            var oh = F.one_hot(masks, k).permute(0, 3, 1, 2).to(ScalarType.Float32);
            var inter = (p * oh).sum([2, 3]);
            var den = p.sum([2, 3]) + oh.sum([2, 3]);
            var dice = inter.mul(two).PlusInPlace(one) / den.Plus(one);
            return ce.Plus(dice[.., 1..].neg().PlusInPlace(one).mean());
        }
    }
}
