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

/// Splits a plan's runs into the levels of its dependency graph (<see cref="DependencyLevels"/>, as the
/// plan does) after checking what Slurm needs of them. Each level becomes one job array.
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

        var level = DependencyLevels.Of(runs, r => r.Hash, r => r.DependsOn, r => $"'{r.Name}' ({r.Hash})");
        var levels = new List<List<SlurmRun>>();
        for (var i = 0; i < runs.Count; i++)
        {
            while (levels.Count <= level[i]) levels.Add([]);
            levels[level[i]].Add(runs[i]);
        }
        return levels;
    }
}
