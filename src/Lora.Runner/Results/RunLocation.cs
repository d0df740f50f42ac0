namespace Lora.Runner;

/// <summary>
/// A finished run named on the command line (`--run HASH|DIR`): its results folder (the card and
/// metrics), its artifacts folder (weights, adapter) and its card. A hash (or a unique prefix of
/// one) is looked up under the results folder; a folder is a results/&lt;hash&gt; folder itself.
/// </summary>
public sealed record RunLocation(ResultsStore Store, string Hash, RunCard Card)
{
    public string ResultDir => Store.ResultDir(Hash);
    public string ArtifactsDir => Store.ArtifactsDir(Hash);

    public static RunLocation Resolve(string run, string results)
    {
        if (Directory.Exists(run) && File.Exists(Path.Combine(run, RunCard.FileName)))
        {
            var full = Path.GetFullPath(run).TrimEnd(Path.DirectorySeparatorChar);
            var store = new ResultsStore(Path.GetDirectoryName(full)!);
            var hash = Path.GetFileName(full);
            return new RunLocation(store, hash, RunCard.Read(Path.Combine(full, RunCard.FileName)));
        }
        var s = new ResultsStore(results);
        var matches = Directory.Exists(s.Root)
            ? Directory.GetDirectories(s.Root).Where(d => File.Exists(Path.Combine(d, RunCard.FileName))).Select(Path.GetFileName)
                .Where(h => h!.StartsWith(run, StringComparison.OrdinalIgnoreCase)).ToList()
            : [];
        if (matches.Count == 0)
            throw new DirectoryNotFoundException(Directory.Exists(run)
                ? $"'{run}' has no {RunCard.FileName}: --run takes a run's results folder (results/HASH) or its hash"
                : $"no run '{run}' under {s.Root} (give a hash from `lora plan SPEC`, or a results/HASH folder; --results names another results folder)");
        if (matches.Count > 1)
            throw new InvalidDataException($"'{run}' is the start of {matches.Count} runs' hashes under {s.Root} ({string.Join(", ", matches.Take(3))}): give more of it");
        return new RunLocation(s, matches[0]!, RunCard.Read(Path.Combine(s.ResultDir(matches[0]!), RunCard.FileName)));
    }

    /// A file of the run's artifacts that must exist (its weights are not committed: say how to get them).
    public string Artifact(string relative)
    {
        var path = Path.Combine(ArtifactsDir, relative);
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new FileNotFoundException($"{Card.Id} ({Hash}) has its result but not its artifacts: {path} does not exist (weights are not committed); " +
                $"`lora run SPEC --only {Hash}` recomputes them", path);
        return path;
    }
}
