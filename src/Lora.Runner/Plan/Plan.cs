using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Lora.Dsl;
using Microsoft.FSharp.Collections;

namespace Lora.Runner;

/// <summary>A run in a plan: its level in the dependency graph (0 = no dependency) and its status.</summary>
public sealed record PlannedRun(ResolvedRun Run, int Level, RunState Status)
{
    public string Hash => Run.Hash;
    public string Id => Run.Id;
}

/// <summary>The runs of a spec as a DAG: pretrain steps first (level 0), the tunes that need them after.</summary>
public sealed class Plan
{
    Plan(IReadOnlyList<PlannedRun> runs) => Runs = runs;

    /// <summary>Every distinct run, in dependency order (level, then declaration order).</summary>
    public IReadOnlyList<PlannedRun> Runs { get; }

    /// <summary>Runs grouped by level: everything in level k depends only on levels &lt; k (one Slurm array each).</summary>
    public IReadOnlyList<IReadOnlyList<PlannedRun>> Levels =>
        Runs.GroupBy(r => r.Level).OrderBy(g => g.Key).Select(g => (IReadOnlyList<PlannedRun>)g.ToList()).ToList();

    public static Plan Compile(IEnumerable<Experiment> experiments, ResultsStore store)
    {
        var runs = Spec.runs(ListModule.OfSeq(experiments)).Select(r => new ResolvedRun(r));
        var byHash = new Dictionary<string, ResolvedRun>();
        var order = new List<ResolvedRun>();
        foreach (var r in runs)
            if (byHash.TryAdd(r.Hash, r)) order.Add(r);

        var levels = DependencyLevels.Of(order, r => r.Hash, r => r.Needs.ToList(), r => $"'{r.Id}' ({r.Hash})");
        var planned = order
            .Select((r, i) => (r, i, level: levels[i]))
            .OrderBy(x => x.level).ThenBy(x => x.i)
            .Select(x => new PlannedRun(x.r, x.level, store.StatusOf(x.r.Hash)))
            .ToList();
        return new Plan(planned);
    }

    /// <summary>A done run that some run of the plan starts from, whose weights are not in the
    /// artifacts folder (a fresh clone has the committed metrics only): `lora run` recomputes them.</summary>
    public bool ArtifactsMissing(PlannedRun r, ResultsStore store) =>
        r.Status == RunState.Done && Runs.Any(d => d.Run.Needs.Contains(r.Hash)) && !store.HasWeights(r.Hash);

    /// <summary>--only: a glob (* and ?) over "experiment/name", or a hash prefix.</summary>
    public static bool Matches(string pattern, PlannedRun r)
    {
        if (r.Hash.StartsWith(pattern, StringComparison.OrdinalIgnoreCase)) return true;
        var regex = "^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$";
        return Lora.Core.IO.SafeRegex.IsMatch(regex, r.Id) || Lora.Core.IO.SafeRegex.IsMatch(regex, r.Run.Spec.Name);
    }

    /// <summary>
    /// What `lora run` considers: runs matching --only (all if null) plus the runs they depend on, in plan
    /// order; then every N-th of those for --shard I/N. Done runs stay in the list (the runner skips them
    /// unless --force) so that shards are the same whatever has finished meanwhile.
    /// </summary>
    public IReadOnlyList<PlannedRun> Select(string? only, int shardIndex, int shardCount)
    {
        var chosen = new HashSet<string>();
        var byHash = Runs.ToDictionary(r => r.Hash);
        void Add(PlannedRun r)
        {
            if (!chosen.Add(r.Hash)) return;
            foreach (var d in r.Run.Needs)
                if (byHash.TryGetValue(d, out var dep)) Add(dep);
        }
        foreach (var r in Runs)
            if (only is null || Matches(only, r)) Add(r);
        return Runs.Where(r => chosen.Contains(r.Hash)).Where((_, i) => i % shardCount == shardIndex).ToList();
    }

    public JsonArray ToJson() =>
        new(Runs.Select(r => (JsonNode)new JsonObject
        {
            ["hash"] = r.Hash,
            ["name"] = r.Id,
            ["dependsOn"] = r.Run.DependsOn,
            ["status"] = r.Status.ToString().ToLowerInvariant(),
            ["level"] = r.Level,
            ["method"] = r.Run.Spec.Method.Name,
            ["rank"] = r.Run.Spec.RankValue,
            // a combination's runs (absent for the others, whose JSON stays as it was)
            ["sources"] = r.Run.Sources.Count > 0 ? new JsonArray(r.Run.Sources.Select(h => (JsonNode)JsonValue.Create(h)!).ToArray()) : null,
        }).Select(o => { if (o is JsonObject j && j["sources"] is null) j.Remove("sources"); return o; }).ToArray());
}
