using System.Text.Json;
using System.Text.Json.Serialization;
using Lora.Core.IO;

namespace Lora.Runner.Slurm;

/// Where the latest submission of one run went: array task `JobId` (= `<ArrayJobId>_<ArrayIndex>`)
/// of the given submission, logging to `Log`.
public sealed record SubmittedTask(
    string Name, string JobId, string ArrayJobId, int ArrayIndex, string Log, string Submission, DateTimeOffset SubmittedAt);

/// results/slurm/jobs.json: run hash → its latest Slurm task, so that `lora status` can ask Slurm
/// about it and point at its log. A resubmission overwrites the entries of the runs it submits.
public static class JobLedger
{
    public static string PathIn(string resultsDir) => Path.Combine(resultsDir, "slurm", "jobs.json");

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static IReadOnlyDictionary<string, SubmittedTask> Load(string resultsDir)
    {
        var path = PathIn(resultsDir);
        if (!File.Exists(path)) return new Dictionary<string, SubmittedTask>(StringComparer.Ordinal);
        try
        {
            var map = JsonSerializer.Deserialize<Dictionary<string, SubmittedTask>>(File.ReadAllText(path), Json);
            return map is null
                ? new Dictionary<string, SubmittedTask>(StringComparer.Ordinal)
                : new Dictionary<string, SubmittedTask>(map, StringComparer.Ordinal);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException(
                $"{path} is not a valid Slurm job ledger ({e.Message}). It only records job ids for `lora status`: " +
                "delete it if it was edited by hand; results are not affected.", e);
        }
    }

    /// Adds or replaces entries, rewriting the file atomically.
    public static void Record(string resultsDir, IEnumerable<KeyValuePair<string, SubmittedTask>> entries)
    {
        var map = new SortedDictionary<string, SubmittedTask>(Load(resultsDir).ToDictionary(), StringComparer.Ordinal);
        foreach (var (hash, task) in entries) map[hash] = task;
        AtomicFile.WriteAllText(PathIn(resultsDir), JsonSerializer.Serialize(map, Json) + "\n");
    }
}
