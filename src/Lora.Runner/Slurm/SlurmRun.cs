using System.Text.RegularExpressions;

namespace Lora.Runner.Slurm;

/// One run of a plan as Slurm sees it: the content hash that names its results folder and that
/// `lora run --only` selects, a name for people, and the hashes of the runs it needs first.
/// Deliberately minimal so that any plan representation maps onto it in a few lines.
public sealed record SlurmRun(string Hash, string Name, IReadOnlyList<string> DependsOn)
{
    static readonly Regex SafeHash = new("^[A-Za-z0-9._-]+$", RegexOptions.CultureInvariant);

    /// Hashes go into file names, list files and shell command lines: only a safe alphabet is allowed.
    internal static void CheckHash(string hash, string what)
    {
        if (string.IsNullOrEmpty(hash) || !SafeHash.IsMatch(hash) || hash is "." or "..")
            throw new ArgumentException(
                $"{what} has the hash '{hash}', which cannot name a results folder or a Slurm task: " +
                "a run hash may only contain letters, digits, '.', '_' and '-'.");
    }
}

/// Splits a plan's runs into levels of its dependency graph: level 0 needs nothing, level k needs
/// only runs of levels below k (pretraining first, tunes after). Each level becomes one job array.
public static class SlurmLevels
{
    public static IReadOnlyList<IReadOnlyList<SlurmRun>> FromRuns(IReadOnlyList<SlurmRun> runs)
    {
        var byHash = new Dictionary<string, SlurmRun>(StringComparer.Ordinal);
        foreach (var run in runs)
        {
            SlurmRun.CheckHash(run.Hash, $"run '{run.Name}'");
            if (!byHash.TryAdd(run.Hash, run))
                throw new ArgumentException(
                    $"runs '{byHash[run.Hash].Name}' and '{run.Name}' have the same hash {run.Hash}: " +
                    "two runs with one configuration would write one results folder.");
        }
        foreach (var run in runs)
            foreach (var dep in run.DependsOn)
                if (!byHash.ContainsKey(dep))
                    throw new ArgumentException(
                        $"run '{run.Name}' ({run.Hash}) depends on {dep}, which is not a run of this plan.");

        var level = new Dictionary<string, int>(StringComparer.Ordinal);
        var visiting = new HashSet<string>(StringComparer.Ordinal);
        int LevelOf(SlurmRun run)
        {
            if (level.TryGetValue(run.Hash, out var known)) return known;
            if (!visiting.Add(run.Hash))
                throw new ArgumentException(
                    $"the plan's dependencies form a cycle through run '{run.Name}' ({run.Hash}): no order can run it.");
            var l = 0;
            foreach (var dep in run.DependsOn) l = Math.Max(l, LevelOf(byHash[dep]) + 1);
            visiting.Remove(run.Hash);
            level[run.Hash] = l;
            return l;
        }

        var levels = new List<List<SlurmRun>>();
        foreach (var run in runs)
        {
            var l = LevelOf(run);
            while (levels.Count <= l) levels.Add([]);
            levels[l].Add(run);
        }
        return levels;
    }
}
