using System.Text.RegularExpressions;

namespace Lora.Runner.Slurm;

/// How a GPU count is asked of Slurm: `--gres=gpu:N` works on every version; `--gpus-per-task=N`
/// needs select/cons_tres (Slurm 19.05+) and is what newer clusters document.
public enum GpuRequest { Gres, GpusPerTask }

/// The resources and limits of every array task of a submission.
public sealed record SlurmOptions
{
    /// Partition (queue) to submit to; null: the cluster's default partition.
    public string? Partition { get; init; }
    /// GPUs per array task (one task = one run); 0 asks for none.
    public int GpusPerTask { get; init; }
    /// Which sbatch option carries GpusPerTask.
    public GpuRequest GpuRequest { get; init; } = GpuRequest.Gres;
    /// Wall-clock limit per task in a Slurm time format (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS).
    public string? Time { get; init; }
    /// At most this many tasks of one array run at once (`--array=0-K%P`); null: no limit.
    public int? MaxParallel { get; init; }
    /// CPUs per task (data loading threads); null: the partition's default.
    public int? CpusPerTask { get; init; }
    /// Account to charge; null: the user's default.
    public string? Account { get; init; }
    /// Array indices must stay below the cluster's MaxArraySize (1001 by default): larger levels are
    /// split into several arrays of at most this many tasks.
    public int MaxArraySize { get; init; } = 1000;
    /// Extra `#SBATCH` lines, each an sbatch option such as `--qos=short` or `--constraint=a100`.
    public IReadOnlyList<string> ExtraDirectives { get; init; } = [];

    static readonly Regex TimeFormat = new(
        @"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$",
        RegexOptions.CultureInvariant);
    static readonly Regex Word = new(@"^[A-Za-z0-9._,:+=@/-]+$", RegexOptions.CultureInvariant);

    /// Throws ArgumentException naming every bad option at once.
    public void Validate()
    {
        var errors = new List<string>();
        if (Partition is not null && !Word.IsMatch(Partition))
            errors.Add($"--partition '{Partition}' is not a partition name (letters, digits and . _ , - only).");
        if (GpusPerTask < 0)
            errors.Add($"--gpus-per-task {GpusPerTask} is negative: give 0 for CPU-only tasks or the number of GPUs.");
        if (Time is not null && !TimeFormat.IsMatch(Time))
            errors.Add($"--time '{Time}' is not a Slurm time: use minutes, HH:MM:SS or D-HH:MM:SS (e.g. 90, 02:00:00, 1-12:00:00).");
        if (MaxParallel is < 1)
            errors.Add($"--max-parallel {MaxParallel} must be at least 1 (or left out for no limit).");
        if (CpusPerTask is < 1)
            errors.Add($"--cpus-per-task {CpusPerTask} must be at least 1.");
        if (Account is not null && !Word.IsMatch(Account))
            errors.Add($"--account '{Account}' is not an account name.");
        if (MaxArraySize < 1)
            errors.Add($"MaxArraySize {MaxArraySize} must be at least 1.");
        foreach (var d in ExtraDirectives)
            if (!d.StartsWith("--", StringComparison.Ordinal) || d.Contains('\n') || d.Contains('\r'))
                errors.Add($"extra sbatch directive '{d}' must be one sbatch option starting with '--'.");
        if (errors.Count > 0)
            throw new ArgumentException("Slurm options are not valid:\n  " + string.Join("\n  ", errors));
    }
}
