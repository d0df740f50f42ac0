using Lora.CommandLine;
using Lora.Dsl;

namespace Lora.Runner.Slurm;

/// `lora submit` and `lora status`: compile the spec into a plan, map its runs onto SlurmRun and
/// hand them to SlurmCommands. Results are "done" exactly when the plan's ResultsStore says so.
public static class PlanToSlurm
{
    /// The plan's runs for Slurm; a dependency outside the plan (a base the results already hold)
    /// is no edge.
    public static IReadOnlyList<SlurmRun> Runs(Plan plan)
    {
        var hashes = plan.Runs.Select(r => r.Hash).ToHashSet(StringComparer.Ordinal);
        return plan.Runs
            .Select(r => new SlurmRun(r.Hash, r.Id, r.Run.Needs.Where(hashes.Contains).ToList()))
            .ToList();
    }

    public static int Submit(SubmitOptions o, TextWriter stdout, TextWriter stderr, ICommandRunner? commands = null, LoraCommand? lora = null)
    {
        var experiments = Commands.LoadSpec(o.Spec, stderr);
        if (experiments is null) return 2;
        var store = new ResultsStore(o.Results);
        var plan = Plan.Compile(experiments, store);
        var options = new SlurmOptions
        {
            Partition = o.Partition,
            GpusPerTask = o.GpusPerTask ?? 0,
            Time = o.Time,
            MaxParallel = o.MaxParallel,
        };
        return SlurmCommands.Submit(Runs(plan), o.Spec, store.Root, options, o.DryRun, stdout, stderr, commands, store.IsDone, lora);
    }

    /// Slurm's view of a plan's runs, for `lora plan` to show a run whose task failed or was killed
    /// (TIMEOUT, OUT_OF_MEMORY, cancelled) as failed with its Slurm log. Null when nothing was ever
    /// submitted into this results folder (no jobs.json), so local use never calls squeue.
    public static SlurmStatusReport? SlurmView(Plan plan, ResultsStore store, ICommandRunner? commands = null) =>
        File.Exists(JobLedger.PathIn(store.Root))
            ? new SlurmStatus(commands ?? new ProcessCommandRunner()).Read(Runs(plan), store.Root, store.IsDone)
            : null;

    /// For `lora plan`: hash → Slurm log of each run that is not done and whose latest Slurm task
    /// failed, was killed or was cancelled (a run killed by Slurm cannot write its own failure note).
    /// Empty when nothing was submitted; a jobs.json that cannot be read is noted on stderr, not fatal.
    public static IReadOnlyDictionary<string, string> FailedTasks(Plan plan, ResultsStore store, TextWriter stderr, ICommandRunner? commands = null)
    {
        try
        {
            var view = SlurmView(plan, store, commands);
            return view is null
                ? new Dictionary<string, string>()
                : view.Runs.Where(s => s.State == RunState.Failed && s.LogPath is not null)
                    .ToDictionary(s => s.Run.Hash, s => s.LogPath!, StringComparer.Ordinal);
        }
        catch (InvalidDataException e)
        {
            stderr.WriteLine($"note: Slurm states not shown: {e.Message}");
            return new Dictionary<string, string>();
        }
    }

    public static int Status(StatusOptions o, TextWriter stdout, TextWriter stderr, ICommandRunner? commands = null)
    {
        var experiments = Commands.LoadSpec(o.Spec, stderr);
        if (experiments is null) return 2;
        var store = new ResultsStore(o.Results);
        var plan = Plan.Compile(experiments, store);
        return SlurmCommands.Status(Runs(plan), store.Root, stdout, stderr, commands, store.IsDone);
    }
}
