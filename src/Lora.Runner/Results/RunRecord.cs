using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Lora.Runner;

/// <summary>The labels a table groups and orders runs by (results/&lt;hash&gt;/metrics.json "labels").</summary>
public sealed record RunLabels
{
    [JsonPropertyName("kind")] public required string Kind { get; init; }
    [JsonPropertyName("experiment")] public required string Experiment { get; init; }
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("method")] public required string Method { get; init; }
    [JsonPropertyName("rank")] public required int Rank { get; init; }
    [JsonPropertyName("model")] public required string Model { get; init; }
    [JsonPropertyName("zoo")] public required string Zoo { get; init; }
    [JsonPropertyName("dataset")] public required string Dataset { get; init; }
    [JsonPropertyName("task")] public required string Task { get; init; }
    [JsonPropertyName("seed")] public required int Seed { get; init; }
}

public sealed record RunParams
{
    [JsonPropertyName("total")] public required long Total { get; init; }
    [JsonPropertyName("trainable")] public required long Trainable { get; init; }
}

public sealed record RunTimings
{
    [JsonPropertyName("train_seconds")] public required double TrainSeconds { get; init; }
    [JsonPropertyName("wall_seconds")] public double? WallSeconds { get; init; }
}

/// <summary>
/// A point of a training curve. An epoch's end has the validation numbers; a point taken every N
/// steps (and the step-0 point) may have only the training loss. <see cref="TaskLoss"/> and
/// <see cref="Regularizer"/> are written only for a method whose optimised loss adds a regulariser
/// (AdaLoRA's orthogonal term): <see cref="TrainLoss"/> is what was optimised, the task loss is what a
/// plot compares across methods.
/// </summary>
public sealed record CurvePoint
{
    public CurvePoint() { }
    [System.Diagnostics.CodeAnalysis.SetsRequiredMembers]
    public CurvePoint(int epoch, long step, double trainLoss, double? valLoss, double? valMetric)
    {
        Epoch = epoch; Step = step; TrainLoss = trainLoss; ValLoss = valLoss; ValMetric = valMetric;
    }

    [JsonPropertyName("epoch")] public required int Epoch { get; init; }
    [JsonPropertyName("step")] public required long Step { get; init; }
    [JsonPropertyName("train_loss")] public required double TrainLoss { get; init; }
    [JsonPropertyName("val_loss")] public double? ValLoss { get; init; }
    [JsonPropertyName("val_metric")] public double? ValMetric { get; init; }
    [JsonPropertyName("task_loss"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? TaskLoss { get; init; }
    [JsonPropertyName("regularizer"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? Regularizer { get; init; }
}

/// <summary>
/// One finished run: results/&lt;hash&gt;/metrics.json. The one type the runner writes and tables,
/// status and Slurm read (<see cref="RunRecordJson"/> is its one serialiser). Fields added later are
/// optional and omitted when unset, so files written before them read back unchanged.
/// </summary>
public sealed record RunRecord
{
    [JsonPropertyName("hash")] public required string Hash { get; init; }
    [JsonPropertyName("id")] public required string Id { get; init; }
    [JsonPropertyName("labels")] public required RunLabels Labels { get; init; }
    [JsonPropertyName("depends_on")] public string? DependsOn { get; init; }
    /// <summary>The run's canonical configuration (what its hash is computed from), as written.</summary>
    [JsonPropertyName("config")] public JsonObject? Config { get; init; }
    /// <summary>Final (or selected-epoch) metrics by name: accuracy, top5, dice, miou, loss (0..1 except loss).</summary>
    [JsonPropertyName("metrics")] public required SortedDictionary<string, double> Metrics { get; init; }
    [JsonPropertyName("params")] public required RunParams Params { get; init; }
    [JsonPropertyName("timings")] public required RunTimings Timings { get; init; }
    /// <summary>Peak memory in bytes: the run's own on CUDA; on CPU see <see cref="Extra"/>'s peak_memory_source.</summary>
    [JsonPropertyName("peak_memory_bytes")] public long? PeakMemoryBytes { get; init; }
    [JsonPropertyName("curve")] public required IReadOnlyList<CurvePoint> Curve { get; init; }
    [JsonPropertyName("extra")] public SortedDictionary<string, string>? Extra { get; init; }
    [JsonPropertyName("provenance")] public JsonObject? Provenance { get; init; }
    /// <summary>The epoch whose metrics <see cref="Metrics"/> holds when it is not the last (best-epoch selection).</summary>
    [JsonPropertyName("selected_epoch"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? SelectedEpoch { get; init; }
    /// <summary>How <see cref="SelectedEpoch"/> was chosen, for people (e.g. "best val accuracy").</summary>
    [JsonPropertyName("selection"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? Selection { get; init; }

    /// <summary>What the CPU peak memory measures: "VmHWM" (the process's peak RSS, older results) or
    /// "VmHWM-above-baseline" (the peak above the RSS before the model was built); null on CUDA or unknown.</summary>
    [JsonIgnore] public string? PeakMemorySource => Extra?.GetValueOrDefault("peak_memory_source");
}

/// <summary>The one serialiser of <see cref="RunRecord"/>: strict on reading (a missing required field, a
/// null where none is allowed or an unknown field is an error naming the file), stable on writing.</summary>
public static class RunRecordJson
{
    static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
        AllowTrailingCommas = false,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string Write(RunRecord record) => JsonSerializer.Serialize(record, Options) + "\n";

    /// <summary>Reads one metrics.json; <paramref name="file"/> names it in every error.</summary>
    public static RunRecord Read(string text, string file)
    {
        try
        {
            return JsonSerializer.Deserialize<RunRecord>(text, Options)
                ?? throw new InvalidDataException($"{file}: not a run record (null)");
        }
        catch (JsonException e)
        {
            var where = e.Path is { Length: > 0 } p ? $" at {p}" : "";
            throw new InvalidDataException($"{file}: not a valid run record{where}: {e.Message}; delete it to rerun that run", e);
        }
    }

    public static RunRecord ReadFile(string file) => Read(File.ReadAllText(file), file);
}
