namespace Lora.Runner.Slurm;

/// `lora submit` and `lora status` once the spec is compiled: the caller maps its plan's runs onto
/// SlurmRun (hash, name, hashes of the runs it needs) and passes what the command line said.
/// Each returns the exit code: 0 ok, 1 Slurm or the filesystem failed, 2 bad input.
public static class SlurmCommands
{
    /// specPath is handed to `lora run` on the compute nodes as an absolute path; isDone defaults to
    /// results/&lt;hash&gt;/metrics.json; lora defaults to $LORA_SLURM_COMMAND or else the command that runs this process.
    public static int Submit(
        IReadOnlyList<SlurmRun> runs, string specPath, string resultsDir, SlurmOptions options, bool dryRun,
        TextWriter stdout, TextWriter stderr,
        ICommandRunner? commands = null, Func<string, bool>? isDone = null, LoraCommand? lora = null)
    {
        try
        {
            var levels = SlurmLevels.FromRuns(runs);
            var invocation = new LoraInvocation(lora ?? LoraCommand.FromEnvironmentOrProcess(), specPath, resultsDir);
            if (!File.Exists(invocation.SpecPath))
                throw new ArgumentException($"the spec {invocation.SpecPath} does not exist: the compute nodes read it from there.");
            var result = new SlurmSubmitter(commands ?? new ProcessCommandRunner())
                .Submit(levels, invocation, options, dryRun, isDone: isDone);
            stdout.Write(result.ToText());
            return 0;
        }
        catch (ArgumentException e)
        {
            stderr.WriteLine($"lora submit: {e.Message}");
            return 2;
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException or InvalidDataException)
        {
            stderr.WriteLine($"lora submit: {e.Message}");
            return 1;
        }
    }

    /// Prints one line per run (state, name, hash, Slurm task, detail: a failed run's log path) and a
    /// count per state. Exit code 0 even when runs failed: the table says so.
    public static int Status(
        IReadOnlyList<SlurmRun> runs, string resultsDir, TextWriter stdout, TextWriter stderr,
        ICommandRunner? commands = null, Func<string, bool>? isDone = null)
    {
        try
        {
            var report = new SlurmStatus(commands ?? new ProcessCommandRunner()).Read(runs, Path.GetFullPath(resultsDir), isDone);
            stdout.Write(report.ToText());
            return 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            stderr.WriteLine($"lora status: {e.Message}");
            return 1;
        }
    }
}
