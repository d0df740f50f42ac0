namespace Lora.Runner;

public static class Program
{
    /// <summary>Creates the executor `lora run` uses (tests substitute fakes).</summary>
    public static Func<IRunExecutor> ExecutorFactory { get; set; } = () => new TrainingExecutor();

    public static int Main(string[] args)
    {
        // Before any tensor exists (see NativeWorkarounds).
        Lora.Core.Training.NativeWorkarounds.Apply();
        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };
        try
        {
            return Commands.Dispatch(args, ExecutorFactory, Console.Out, Console.Error, cts.Token);
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("lora: cancelled; finished runs are kept, the interrupted one left no result");
            return 130;
        }
    }
}
