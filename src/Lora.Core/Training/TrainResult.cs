namespace Lora.Core.Training;

/// Metrics of one evaluation pass. Classification fills Top1/Top5; segmentation Dice/MIoU and the
/// per-class lists (class 0 is the background).
public sealed record EvalMetrics(
    int Count, double Loss, double? Top1 = null, double? Top5 = null, double? Dice = null, double? MIoU = null,
    IReadOnlyList<double>? DicePerClass = null, IReadOnlyList<double>? IouPerClass = null);

/// The loss of one optimisation step (1-based) and the learning rate it used. <see cref="TaskLoss"/>:
/// the loss without the method's regulariser (AdaLoRA's orthogonal term), when it adds one.
public sealed record StepLoss(long Step, int Epoch, double Loss, double LearningRate, double? TaskLoss = null);

/// One epoch's summary: mean training loss and, when evaluated, the validation metrics.
public sealed record EpochMetrics(int Epoch, long Step, double TrainLoss, EvalMetrics? Validation);

/// Everything a run reports. <see cref="Final"/> is the selected epoch's validation (the last one's,
/// or with <see cref="TrainOptions.SelectBest"/> the best one's: <see cref="SelectedEpoch"/>, 1-based;
/// null when the last epoch is reported).
public sealed record TrainResult(
    EvalMetrics Final,
    IReadOnlyList<StepLoss> LossCurve,
    IReadOnlyList<EpochMetrics> Epochs,
    long Steps,
    TimeSpan TrainTime,
    double ImagesPerSecond,
    double PeakMemoryMiB,
    string PeakMemorySource,
    Precision Precision,
    string Device,
    long TrainableParameters,
    long? ResumedFromStep,
    int? SelectedEpoch = null,
    bool StoppedEarly = false)
{
    /// The validation metrics before the first step (<see cref="TrainOptions.EvalAtStart"/>), or null.
    public EvalMetrics? InitialValidation { get; init; }
}

/// Progress of a run, reported after every step (and with <see cref="EpochEnd"/> after each epoch's
/// evaluation).
public sealed record TrainingProgress(
    int Epoch, int Epochs, long Step, long TotalSteps, double Loss, double LearningRate,
    double ImagesPerSecond, TimeSpan Eta, EpochMetrics? EpochEnd = null);

/// The loss became NaN or infinite; the run stopped before that step changed any weight.
public sealed class TrainingDivergedException(long step, int epoch, double loss, string? checkpoint)
    : Exception($"the loss became {loss} at step {step} (epoch {epoch + 1}); the run was stopped before that step changed the weights. " +
                (checkpoint is null ? "No checkpoint was written." : $"The last good checkpoint is {checkpoint}.") +
                " Lower the learning rate, enable gradient clipping or check the data.")
{
    public long Step { get; } = step;
    public int Epoch { get; } = epoch;
    public double Loss { get; } = loss;
    public string? Checkpoint { get; } = checkpoint;
}
