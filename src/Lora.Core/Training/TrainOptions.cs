using Lora.Core.Data;

namespace Lora.Core.Training;

/// How weights and inputs are stored during training. TorchSharp has no autocast, so reduced
/// precision is explicit: <see cref="BFloat16"/> casts every leaf module outside the adapters and the
/// inputs to bfloat16; adapter weights, the optimiser's master weights and its moments stay float32;
/// logits are cast back to float32 for the loss (see <see cref="MixedPrecision"/>). Modules that hold
/// parameters of their own beside children cast them to their activations' dtype.
public enum Precision { Float32, BFloat16 }

/// Options of one training run. Defaults follow common fine-tuning practice (AdamW, weight decay
/// 0.05 on matrices only, cosine schedule, clip at norm 1).
/// The learning rate after the warm-up: timm's `sched` (cosine, linear, constant, step).
public enum LrSchedule { Cosine, Linear, Constant, Step }

public sealed record TrainOptions
{
    public int Epochs { get; init; } = 1;
    public int BatchSize { get; init; } = 32;
    /// Batch size for evaluation; 0 means twice the training batch size.
    public int EvalBatchSize { get; init; }
    public double LearningRate { get; init; } = 1e-3;
    /// The learning rate the cosine schedule ends at.
    public double MinLearningRate { get; init; }
    /// Steps of linear warm-up from lr/warmup to lr.
    public int WarmupSteps { get; init; }
    /// Decoupled (AdamW) weight decay, applied to parameters with 2 or more dimensions.
    public double WeightDecay { get; init; } = 0.05;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Epsilon { get; init; } = 1e-8;
    /// Maximum global gradient norm; 0 turns clipping off.
    public double ClipGradNorm { get; init; } = 1.0;
    /// Seeds data order, augmentation and dropout (per epoch / per step, so a resumed run repeats them).
    public int Seed { get; init; }
    /// "cpu", "cuda" or "cuda:N".
    public string Device { get; init; } = "cpu";
    public bool EvalEveryEpoch { get; init; } = true;
    /// Also evaluate before the first step (a curve's step-0 point); it changes no training step.
    public bool EvalAtStart { get; init; }
    /// Folder for the checkpoint of the trainable state; null: no checkpoints (and no resume).
    public string? CheckpointDir { get; init; }
    /// Also checkpoint every N steps within an epoch (0: only at the end of each epoch).
    public int CheckpointEverySteps { get; init; }
    public Precision Precision { get; init; } = Precision.Float32;
    public Transforms TrainTransforms { get; init; } = Transforms.None;
    /// Evaluation transforms; null: the training transforms without their random parts.
    public Transforms? EvalTransforms { get; init; }
    /// Give a promptable segmenter its box prompts (otherwise it gets the images alone).
    public bool UseBoxPrompts { get; init; } = true;
    public bool DropLast { get; init; }
    /// Batches prepared ahead on the loader's worker thread (0: build them inline).
    public int Prefetch { get; init; } = 2;
    /// The schedule after the warm-up; cosine and linear end at <see cref="MinLearningRate"/>.
    public LrSchedule Schedule { get; init; } = LrSchedule.Cosine;
    /// Step schedule: multiply the learning rate by <see cref="DecayRate"/> every this many epochs.
    public int DecayEpochs { get; init; } = 1;
    public double DecayRate { get; init; } = 0.1;
    /// Batches whose gradients add up before one optimiser step (each batch's loss weighted by its
    /// share of the group's items, so the step equals one on the group as a single batch).
    public int GradAccumulation { get; init; } = 1;
    /// Classification: the target's probability mass spread evenly over all classes (PyTorch's
    /// cross_entropy label_smoothing); validation losses stay unsmoothed.
    public double LabelSmoothing { get; init; }
    /// Stop after this many evaluated epochs without a better validation metric (null: never).
    public int? Patience { get; init; }
    /// Report, and leave in the model, the epoch with the best validation metric (accuracy, DICE, or
    /// the lowest loss) instead of the last.
    public bool SelectBest { get; init; }
    /// Read the loss back to the host every N steps (each read waits for the GPU to finish the step);
    /// 0 chooses: every step on CPU, every 8 steps on CUDA. With N > 1 a non-finite loss is reported
    /// (with its step) up to N − 1 steps late, always before a checkpoint is written.
    public int LossReadEvery { get; init; }

    public void Validate()
    {
        var errors = new List<string>();
        if (Epochs < 1) errors.Add($"Epochs must be at least 1 (got {Epochs})");
        if (BatchSize < 1) errors.Add($"BatchSize must be at least 1 (got {BatchSize})");
        if (LearningRate <= 0 || double.IsNaN(LearningRate)) errors.Add($"LearningRate must be positive (got {LearningRate})");
        if (MinLearningRate < 0 || MinLearningRate > LearningRate) errors.Add($"MinLearningRate must be in [0, LearningRate] (got {MinLearningRate})");
        if (WarmupSteps < 0) errors.Add($"WarmupSteps must not be negative (got {WarmupSteps})");
        if (WeightDecay < 0) errors.Add($"WeightDecay must not be negative (got {WeightDecay})");
        if (ClipGradNorm < 0) errors.Add($"ClipGradNorm must not be negative (got {ClipGradNorm})");
        if (LossReadEvery < 0) errors.Add($"LossReadEvery must not be negative (got {LossReadEvery})");
        if (DecayEpochs < 1) errors.Add($"DecayEpochs must be at least 1 (got {DecayEpochs})");
        if (!(DecayRate > 0 && DecayRate <= 1)) errors.Add($"DecayRate must be in (0, 1] (got {DecayRate})");
        if (GradAccumulation < 1) errors.Add($"GradAccumulation must be at least 1 (got {GradAccumulation})");
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 1)) errors.Add($"LabelSmoothing must be in [0, 1) (got {LabelSmoothing})");
        if (Patience is int p && p < 1) errors.Add($"Patience must be at least 1 (got {p})");
        if ((Patience is not null || SelectBest) && !EvalEveryEpoch) errors.Add("early stopping and best-epoch selection need EvalEveryEpoch");
        if (CheckpointEverySteps < 0) errors.Add($"CheckpointEverySteps must not be negative (got {CheckpointEverySteps})");
        if (errors.Count > 0) throw new ArgumentException("invalid training options: " + string.Join("; ", errors) + ".");
    }
}
