using System.Globalization;
using System.Text;
using Lora.Core.IO;

namespace Lora.Runner.Slurm;

/// One job array of a submission: its script, the job ids it waits for (afterok), and the array job
/// id sbatch gave it (null in a dry run).
public sealed record SubmittedArray(SbatchScript Script, IReadOnlyList<string> AfterOk, string? JobId)
{
    /// The sbatch command line that submits (or would submit) this array.
    public IReadOnlyList<string> SbatchArgs =>
        AfterOk.Count == 0
            ? ["--parsable", Script.ScriptPath]
            : ["--parsable", "--dependency=afterok:" + string.Join(':', AfterOk), Script.ScriptPath];
}

/// What `lora submit` did: the folder of its scripts, the arrays in submission order, and the runs
/// it left out (done, or still queued or running from an earlier submission).
public sealed record SubmissionResult(
    string Directory, bool DryRun, IReadOnlyList<SubmittedArray> Arrays, IReadOnlyList<SlurmRunStatus> Skipped,
    IReadOnlyList<string> Notes)
{
    /// For people: a dry run prints every script, its run list and its sbatch line; a real one a summary.
    public string ToText()
    {
        var s = new StringBuilder();
        var done = Skipped.Count(r => r.State == RunState.Done);
        var active = Skipped.Count - done;
        var runs = Arrays.Sum(a => a.Script.Runs.Count);
        if (DryRun)
        {
            foreach (var a in Arrays)
            {
                s.Append($"# ---- {a.Script.ScriptPath}\n").Append(a.Script.Text);
                s.Append($"# ---- {a.Script.RunListPath}\n").Append(a.Script.RunListText);
                s.Append("# ---- submit: sbatch ").Append(string.Join(' ', a.SbatchArgs.Select(Shell.Quote))).Append("\n\n");
            }
            s.Append($"dry run: {runs} run(s) in {Arrays.Count} job array(s) would be submitted; nothing was written or submitted.\n");
        }
        else
        {
            foreach (var a in Arrays)
                s.Append($"{a.Script.Name}: job {a.JobId}, {a.Script.Runs.Count} run(s)")
                 .Append(a.AfterOk.Count > 0 ? $", after {string.Join(", ", a.AfterOk)}" : "")
                 .Append('\n');
            s.Append(Arrays.Count == 0
                ? "nothing to submit.\n"
                : $"submitted {runs} run(s) in {Arrays.Count} job array(s); scripts and logs in {Directory}\n");
        }
        s.Append($"left out: {done} done, {active} still queued or running in Slurm.\n");
        foreach (var n in Notes) s.Append("note: ").Append(n).Append('\n');
        return s.ToString();
    }
}

/// Hands a plan to Slurm: one job array per dependency level, chained with afterok, skipping runs
/// that are done or still in Slurm's queue, recording every submitted task in jobs.json.
public sealed class SlurmSubmitter(ICommandRunner commands)
{
    /// levels: the plan's runs by dependency level (see SlurmLevels.FromRuns); a run may only depend on
    /// runs of earlier levels. isDone: hash → results exist (default: results/&lt;hash&gt;/metrics.json).
    /// submissionId names the folder results/slurm/&lt;id&gt;/ (default: the UTC time).
    public SubmissionResult Submit(
        IReadOnlyList<IReadOnlyList<SlurmRun>> levels, LoraInvocation lora, SlurmOptions options, bool dryRun,
        string? submissionId = null, Func<string, bool>? isDone = null)
    {
        options.Validate();
        var all = levels.SelectMany(l => l).ToList();
        var status = new SlurmStatus(commands).Read(all, lora.ResultsDir, isDone);
        var byHash = status.Runs.ToDictionary(s => s.Run.Hash, StringComparer.Ordinal);
        var skipped = status.Runs.Where(s => s.State == RunState.Done || s.InSlurm).ToList();

        var directory = SubmissionDirectory(lora.ResultsDir, submissionId);
        var id = Path.GetFileName(directory);
        // hash → the Slurm task that will produce it (an earlier, still active task or one submitted now)
        var producer = new Dictionary<string, (string ArrayJob, int Index, string Name)>(StringComparer.Ordinal);
        var arraySizes = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var s in skipped.Where(s => s.InSlurm && s.JobId is not null))
            producer[s.Run.Hash] = (s.JobId!, -1, s.Run.Name); // an existing task: waited for by its own id

        var arrays = new List<SubmittedArray>();
        for (var level = 0; level < levels.Count; level++)
        {
            var left = levels[level].Where(r => byHash[r.Hash] is { State: not RunState.Done, InSlurm: false }).ToList();
            var parts = left.Chunk(options.MaxArraySize).ToList();
            for (var part = 0; part < parts.Count; part++)
            {
                var name = parts.Count == 1 ? $"level-{level}" : $"level-{level}-part-{part}";
                var script = SbatchScript.Create(name, level, parts[part], lora, options, directory);
                var afterOk = AfterOk(parts[part], producer, arraySizes, byHash);
                string? jobId = null;
                if (!dryRun)
                {
                    if (arrays.Count == 0) Directory.CreateDirectory(Path.Combine(directory, "logs"));
                    AtomicFile.WriteAllText(script.RunListPath, script.RunListText);
                    AtomicFile.WriteAllText(script.ScriptPath, script.Text);
                    jobId = Sbatch(new SubmittedArray(script, afterOk, null).SbatchArgs, script, arrays);
                    var now = DateTimeOffset.UtcNow;
                    JobLedger.Record(lora.ResultsDir, script.Runs.Select((r, i) => KeyValuePair.Create(r.Hash,
                        new SubmittedTask(r.Name, $"{jobId}_{i}", jobId, i, script.LogPath(jobId, i), id, now))));
                }
                var arrayJob = jobId ?? $"<{name}>";
                arraySizes[arrayJob] = script.Runs.Count;
                for (var i = 0; i < script.Runs.Count; i++) producer[script.Runs[i].Hash] = (arrayJob, i, script.Runs[i].Name);
                arrays.Add(new(script, afterOk, jobId));
            }
        }
        return new(directory, dryRun, arrays, skipped, status.Notes);
    }

    /// The jobs an array must wait for: each needed task by its id, or the whole array when all of its
    /// tasks are needed (short dependency strings on big grids).
    static List<string> AfterOk(
        IReadOnlyList<SlurmRun> runs, Dictionary<string, (string ArrayJob, int Index, string Name)> producer,
        Dictionary<string, int> arraySizes, Dictionary<string, SlurmRunStatus> byHash)
    {
        var needed = new Dictionary<string, SortedSet<int>>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var run in runs)
            foreach (var dep in run.DependsOn)
            {
                if (byHash.TryGetValue(dep, out var st) && st.State == RunState.Done) continue;
                if (!producer.TryGetValue(dep, out var p))
                    throw new ArgumentException(
                        $"run '{run.Name}' ({run.Hash}) depends on {dep}, which is neither done nor in an earlier level: " +
                        "levels must list every run after the runs it depends on (use SlurmLevels.FromRuns).");
                if (!needed.TryGetValue(p.ArrayJob, out var set)) { needed[p.ArrayJob] = set = []; order.Add(p.ArrayJob); }
                if (p.Index >= 0) set.Add(p.Index);
            }
        var ids = new List<string>();
        foreach (var job in order)
        {
            var set = needed[job];
            if (set.Count == 0) ids.Add(job); // an existing task id such as 123_4
            else if (arraySizes.TryGetValue(job, out var size) && set.Count == size) ids.Add(job);
            else ids.AddRange(set.Select(i => $"{job}_{i}"));
        }
        return ids;
    }

    string Sbatch(IReadOnlyList<string> args, SbatchScript script, List<SubmittedArray> before)
    {
        var result = commands.Run("sbatch", args);
        var already = before.Count == 0
            ? "Nothing was submitted before it."
            : $"Already submitted: {string.Join(", ", before.Select(a => $"{a.Script.Name} as job {a.JobId}"))} (recorded in jobs.json; `lora submit` again submits only what is missing).";
        if (!result.Found)
            throw new InvalidOperationException(
                "sbatch is not installed here: `lora submit` must run where Slurm's client commands are (a login node). " +
                $"Use --dry-run to only print the scripts. {already}");
        if (result.ExitCode != 0)
            throw new InvalidOperationException(
                $"sbatch refused {script.ScriptPath} (exit {result.ExitCode}): {result.Stderr.Trim()}\n{already}");
        // --parsable prints "<job id>" or "<job id>;<cluster>"
        var jobId = result.Stdout.Trim().Split(';')[0].Trim();
        if (jobId.Length == 0 || !jobId.All(char.IsAsciiDigit))
            throw new InvalidOperationException(
                $"sbatch accepted {script.ScriptPath} but printed '{result.Stdout.Trim()}' instead of a job id. {already}");
        return jobId;
    }

    static string SubmissionDirectory(string resultsDir, string? submissionId)
    {
        var id = submissionId ?? DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        if (id.Length == 0 || id is "." or ".." || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            throw new ArgumentException($"the submission id '{id}' cannot name a folder: use letters, digits, '.', '_' and '-'.");
        var root = Path.Combine(resultsDir, "slurm");
        var dir = Path.Combine(root, id);
        for (var n = 2; Directory.Exists(dir); n++) dir = Path.Combine(root, $"{id}-{n}");
        return dir;
    }
}
