namespace Lora.Runner;

/// <summary>
/// Levels of a dependency graph, computed in one place for the plan and for Slurm: level 0 needs
/// nothing, level k needs only runs of levels below k (pretraining first, tunes after). A dependency
/// on a key that is not in the list is no edge (a base the results already hold).
/// </summary>
public static class DependencyLevels
{
    /// <summary>The level of each item, in the items' order; a cycle is an ArgumentException naming a run on it.</summary>
    public static int[] Of<T>(IReadOnlyList<T> items, Func<T, string> key, Func<T, IEnumerable<string>> dependsOn, Func<T, string> describe)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < items.Count; i++) index.TryAdd(key(items[i]), i);
        var level = new int?[items.Count];
        var visiting = new HashSet<int>();
        int LevelOf(int i)
        {
            if (level[i] is { } known) return known;
            if (!visiting.Add(i))
                throw new ArgumentException(
                    $"the plan's dependencies form a cycle through run {describe(items[i])}: no order can run it.");
            var l = 0;
            foreach (var dep in dependsOn(items[i]))
                if (index.TryGetValue(dep, out var j)) l = Math.Max(l, LevelOf(j) + 1);
            visiting.Remove(i);
            level[i] = l;
            return l;
        }
        return Enumerable.Range(0, items.Count).Select(LevelOf).ToArray();
    }
}
