namespace Lora.Runner.Slurm;

/// What a Slurm job state means for a run.
public enum TaskPhase { Queued, Running, Succeeded, Failed }

/// Reads the output of squeue and sacct.
public static class SlurmStates
{
    /// Slurm's state word (first word: sacct writes "CANCELLED by 1000") → phase; null for a word Slurm
    /// may add later, which callers treat as "unknown".
    public static TaskPhase? Classify(string state)
    {
        var word = state.Trim().Split(' ', 2)[0].TrimEnd('+').ToUpperInvariant();
        return word switch
        {
            "PENDING" or "CONFIGURING" or "REQUEUED" or "REQUEUE_FED" or "REQUEUE_HOLD" or "RESV_DEL_HOLD"
                or "SUSPENDED" or "STOPPED" or "SPECIAL_EXIT" => TaskPhase.Queued,
            "RUNNING" or "COMPLETING" or "STAGE_OUT" or "SIGNALING" or "RESIZING" => TaskPhase.Running,
            "COMPLETED" => TaskPhase.Succeeded,
            "CANCELLED" or "FAILED" or "TIMEOUT" or "PREEMPTED" or "NODE_FAIL" or "BOOT_FAIL" or "DEADLINE"
                or "OUT_OF_MEMORY" or "REVOKED" => TaskPhase.Failed,
            _ => null,
        };
    }

    /// `sacct --jobs=... --format=JobID,State --parsable2 --noheader` → array task id ("123_4") → state.
    /// Job steps ("123_4.batch") are skipped; a pending array's range ("123_[5-9%2]") is expanded;
    /// a later line for the same task (a requeue) wins.
    public static IReadOnlyDictionary<string, string> ParseSacct(string output) => ParsePipeSeparated(output);

    /// `squeue --noheader --array --jobs=... --format=%i|%T` → array task id → state (same rules).
    public static IReadOnlyDictionary<string, string> ParseSqueue(string output) => ParsePipeSeparated(output);

    static Dictionary<string, string> ParsePipeSeparated(string output)
    {
        var states = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var raw in output.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0) continue;
            var fields = line.Split('|');
            if (fields.Length < 2) continue;
            var id = fields[0].Trim();
            if (id.Contains('.')) continue;
            foreach (var task in ExpandTaskIds(id)) states[task] = fields[1].Trim();
        }
        return states;
    }

    /// "123_4" → ["123_4"]; "123_[0-2,7%2]" → ["123_0","123_1","123_2","123_7"]; "123" → ["123"].
    public static IEnumerable<string> ExpandTaskIds(string id)
    {
        var open = id.IndexOf("_[", StringComparison.Ordinal);
        if (open < 0 || !id.EndsWith(']')) return [id];
        var job = id[..open];
        var body = id[(open + 2)..^1];
        var pct = body.IndexOf('%');
        if (pct >= 0) body = body[..pct];
        var ids = new List<string>();
        foreach (var part in body.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            var range = part.Split(':')[0]; // "0-15:4" has a step; the step is applied below
            var step = part.Contains(':') && int.TryParse(part.Split(':')[1], out var st) && st > 0 ? st : 1;
            var bounds = range.Split('-');
            if (bounds.Length == 2 && int.TryParse(bounds[0], out var lo) && int.TryParse(bounds[1], out var hi))
                for (var i = lo; i <= hi; i += step) ids.Add($"{job}_{i}");
            else if (int.TryParse(range, out var one))
                ids.Add($"{job}_{one}");
        }
        return ids;
    }
}
