namespace Lora.Runner.Slurm;

/// One run's state. JobId and LogPath come from the latest submission, when there was one.
/// InSlurm: Slurm itself reports the task as queued or running (a resubmission leaves it alone).
public sealed record SlurmRunStatus(SlurmRun Run, RunState State, string? JobId, string? LogPath, string Detail, bool InSlurm = false);

/// The states of a plan's runs plus notes on what could not be asked (e.g. no accounting storage).
public sealed record SlurmStatusReport(IReadOnlyList<SlurmRunStatus> Runs, IReadOnlyList<string> Notes)
{
    /// A plain table: state, name, hash, job, detail.
    public string ToText()
    {
        var rows = Runs.Select(s => new[]
        {
            s.State.ToString().ToLowerInvariant(), s.Run.Name, s.Run.Hash, s.JobId ?? "-", s.Detail,
        }).ToList();
        var header = new[] { "state", "run", "hash", "job", "detail" };
        var widths = Enumerable.Range(0, 4).Select(i => rows.Select(r => r[i].Length).Append(header[i].Length).Max()).ToArray();
        string Line(string[] r) => string.Join("  ", r.Take(4).Select((c, i) => c.PadRight(widths[i]))) + "  " + r[4];
        var text = new System.Text.StringBuilder();
        text.Append(Line(header).TrimEnd()).Append('\n');
        foreach (var r in rows) text.Append(Line(r).TrimEnd()).Append('\n');
        var counts = Enum.GetValues<RunState>().Select(st => $"{Runs.Count(r => r.State == st)} {st.ToString().ToLowerInvariant()}");
        text.Append(string.Join(", ", counts)).Append('\n');
        foreach (var n in Notes) text.Append("note: ").Append(n).Append('\n');
        return text.ToString();
    }
}

/// Combines the results folder, jobs.json, squeue and (where accounting storage exists) sacct.
public sealed class SlurmStatus(ICommandRunner commands)
{
    public SlurmStatusReport Read(IReadOnlyList<SlurmRun> runs, string resultsDir, Func<string, bool>? isDone = null)
    {
        isDone ??= new ResultsStore(resultsDir).IsDone;
        var ledger = JobLedger.Load(resultsDir);
        var notes = new List<string>();
        var asked = runs.Where(r => !isDone(r.Hash) && ledger.ContainsKey(r.Hash)).ToList();
        var arrayIds = asked.Select(r => ledger[r.Hash].ArrayJobId).Distinct().ToList();

        IReadOnlyDictionary<string, string>? queue = new Dictionary<string, string>();
        IReadOnlyDictionary<string, string> accounting = new Dictionary<string, string>();
        if (arrayIds.Count > 0)
        {
            var jobs = "--jobs=" + string.Join(',', arrayIds);
            var sq = commands.Run("squeue", ["--noheader", "--array", jobs, "--format=%i|%T"]);
            if (sq.ExitCode == 0) queue = SlurmStates.ParseSqueue(sq.Stdout);
            // squeue refuses a list of only finished (purged) jobs; that simply means none is queued
            else if (sq.Found && sq.Stderr.Contains("Invalid job id", StringComparison.OrdinalIgnoreCase)) queue = new Dictionary<string, string>();
            else
            {
                queue = null;
                notes.Add(sq.Found
                    ? $"squeue failed ({FirstLine(sq.Stderr)}): states of submitted runs are unknown."
                    : "squeue is not installed here: states of submitted runs are unknown (run `lora status` on a login node).");
            }
            if (queue is not null && asked.Any(r => !queue.ContainsKey(ledger[r.Hash].JobId)))
            {
                var sa = commands.Run("sacct", ["--noheader", "--parsable2", jobs, "--format=JobID,State"]);
                if (sa.ExitCode == 0) accounting = SlurmStates.ParseSacct(sa.Stdout);
                else notes.Add(
                    $"sacct is not available ({FirstLine(sa.Stderr)}): a submitted run that left the queue without results counts as failed.");
            }
        }

        var statuses = new List<SlurmRunStatus>(runs.Count);
        foreach (var run in runs)
        {
            ledger.TryGetValue(run.Hash, out var task);
            // Asked again after Slurm answered: a task may have finished in between.
            if (isDone(run.Hash))
            {
                statuses.Add(new(run, RunState.Done, task?.JobId, task?.Log, $"results in {Path.Combine(resultsDir, run.Hash)}"));
                continue;
            }
            if (task is null)
            {
                statuses.Add(new(run, RunState.Pending, null, null, "not submitted"));
                continue;
            }
            if (queue is null)
            {
                statuses.Add(new(run, RunState.Pending, task.JobId, task.Log, $"submitted as {task.JobId}; Slurm state unknown"));
                continue;
            }
            var inQueue = queue.TryGetValue(task.JobId, out var qState);
            var state = inQueue ? qState : accounting.GetValueOrDefault(task.JobId);
            statuses.Add(Classify(run, task, state, inQueue));
        }
        return new(statuses, notes);
    }

    static SlurmRunStatus Classify(SlurmRun run, SubmittedTask task, string? slurmState, bool inQueue)
    {
        var phase = slurmState is null ? null : SlurmStates.Classify(slurmState);
        var log = File.Exists(task.Log)
            ? $"log: {task.Log}"
            : $"no log at {task.Log}: the task never started (cancelled, or a run it depends on failed?)";
        return phase switch
        {
            TaskPhase.Queued => new(run, RunState.Pending, task.JobId, task.Log, $"queued ({slurmState})", InSlurm: true),
            TaskPhase.Running => new(run, RunState.Running, task.JobId, task.Log, $"running; log: {task.Log}", InSlurm: true),
            TaskPhase.Succeeded => new(run, RunState.Failed, task.JobId, task.Log,
                $"task completed but wrote no {Path.Combine(run.Hash, ResultsStore.MetricsFile)}; {log}"),
            TaskPhase.Failed => new(run, RunState.Failed, task.JobId, task.Log, $"{slurmState}; {log}"),
            _ when slurmState is not null && inQueue => new(run, RunState.Pending, task.JobId, task.Log, $"in the queue as {slurmState}", InSlurm: true),
            _ => new(run, RunState.Failed, task.JobId, task.Log, $"left the queue without results; {log}"),
        };
    }

    static string FirstLine(string text)
    {
        var t = text.Trim();
        var nl = t.IndexOf('\n');
        return nl < 0 ? (t.Length == 0 ? "no message" : t) : t[..nl];
    }
}
