using System.Globalization;
using Lora.Core.Training;
using Spectre.Console;

namespace Lora.Runner;

/// Shows training progress: a live progress bar on a terminal (Spectre.Console), plain lines when
/// the output is redirected (CI, logs) — one per epoch and about one per tenth of the run.
public static class ProgressView
{
    public static bool IsInteractive =>
        !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// Runs <paramref name="train"/> with a progress sink that renders to the console.
    public static T Run<T>(string label, Func<IProgress<TrainingProgress>, T> train, TextWriter? plainOutput = null)
    {
        if (!IsInteractive || plainOutput is not null)
            return train(new PlainLines(label, plainOutput ?? Console.Out));
        T result = default!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(label));
                result = train(new Sink(p =>
                {
                    task.MaxValue = Math.Max(1, p.TotalSteps);
                    task.Value = p.Step;
                    task.Description = Markup.Escape($"{label}  {Format(p)}");
                    if (p.EpochEnd is not null) AnsiConsole.MarkupLine(Markup.Escape($"{label}  {Format(p)}"));
                }));
            });
        return result;
    }

    /// One line of progress: epoch, step, loss, learning rate, img/s, ETA, and the validation
    /// metrics at an epoch's end.
    public static string Format(TrainingProgress p)
    {
        var c = CultureInfo.InvariantCulture;
        var s = string.Format(c, "epoch {0}/{1} step {2}/{3} loss {4:F4} lr {5:0.###e+0} {6:F0} img/s ETA {7}",
            p.Epoch, p.Epochs, p.Step, p.TotalSteps, p.Loss, p.LearningRate, p.ImagesPerSecond, p.Eta.ToString(@"hh\:mm\:ss", c));
        if (p.EpochEnd?.Validation is EvalMetrics v)
        {
            s += string.Format(c, " | val loss {0:F4}", v.Loss);
            if (v.Top1 is double t1) s += string.Format(c, " top-1 {0:P1}", t1);
            if (v.Dice is double d) s += string.Format(c, " DICE {0:F4} mIoU {1:F4}", d, v.MIoU ?? double.NaN);
        }
        return s;
    }

    sealed class Sink(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }

    /// Plain lines for logs: every epoch end and about ten lines over the run.
    public sealed class PlainLines(string label, TextWriter output) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            long every = Math.Max(1, p.TotalSteps / 10);
            if (p.EpochEnd is not null || p.Step % every == 0)
                output.WriteLine($"{label}  {Format(p)}");
        }
    }
}
