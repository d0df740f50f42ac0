using Lora.Dsl;

namespace Lora.Runner;

/// <summary>One run of a plan, resolved: its configuration, content hash and the run it depends on.</summary>
public sealed class ResolvedRun
{
    public ResolvedRun(Run spec)
    {
        Spec = spec;
        ConfigJson = Canonical.json(spec);
        Hash = Canonical.hashOf(ConfigJson);
        DependsOn = Canonical.dependsOn(spec);
        Sources = Canonical.sources(spec).ToList();
    }

    /// <summary>The run as the DSL describes it (method, model, dataset, training settings), defaults filled in.</summary>
    public Run Spec { get; }
    /// <summary>Canonical JSON (sorted keys) of the resolved configuration; <see cref="Hash"/> is its SHA-256.</summary>
    public string ConfigJson { get; }
    /// <summary>12 hex digits: the results folder's name for this run.</summary>
    public string Hash { get; }
    /// <summary>Hash of the pretrain run whose weights this run starts from, or null.</summary>
    public string? DependsOn { get; }
    /// <summary>Hashes of the runs whose adapters this run combines (a combination), else empty.</summary>
    public IReadOnlyList<string> Sources { get; }
    /// <summary>Every run this one needs done first: its base and the runs it combines.</summary>
    public IEnumerable<string> Needs => (DependsOn is { } d ? [d] : Array.Empty<string>()).Concat(Sources);
    /// <summary>"experiment/name".</summary>
    public string Id => Spec.Id;
    public override string ToString() => $"{Hash} {Id}";
}

/// <summary>Where a run writes, and what it may read.</summary>
public sealed class RunContext
{
    /// <summary>results/&lt;hash&gt;: small text files only (metrics.json is written by the runner, not the executor).</summary>
    public required string ResultDir { get; init; }
    /// <summary>results-artifacts/&lt;hash&gt;: checkpoints, adapters, logs (not committed).</summary>
    public required string ArtifactsDir { get; init; }
    /// <summary>The artifacts folder of the run this one depends on (its weights), or null.</summary>
    public string? BaseArtifactsDir { get; init; }
    /// <summary>The model card of the run this one depends on (its input channels and size), or null.</summary>
    public string? BaseCardPath { get; init; }
    /// <summary>A combination's source runs' artifacts folders (their adapters), in its order; else empty.</summary>
    public IReadOnlyList<string> SourceArtifactsDirs { get; init; } = [];
    /// <summary>"cpu" or "cuda": the spec's device unless --device overrode it.</summary>
    public required string Device { get; init; }
    /// <summary>Progress lines for the console and the run's log.</summary>
    public Action<string> Log { get; init; } = _ => { };
    /// <summary>Lines for the run's log only (what the console already showed another way).</summary>
    public Action<string> LogFileOnly { get; init; } = _ => { };
}

/// <summary>What an executor reports back. Metric names: accuracy (classification, 0..1), dice and miou (segmentation, 0..1), loss.</summary>
public sealed class RunResult
{
    public IReadOnlyDictionary<string, double> Metrics { get; init; } = new Dictionary<string, double>();
    public IReadOnlyList<CurvePoint> Curve { get; init; } = [];
    public long TotalParams { get; init; }
    public long TrainableParams { get; init; }
    public double TrainSeconds { get; init; }
    /// <summary>Peak memory in bytes (GPU memory on cuda, process working set on cpu), or null if unknown.</summary>
    public long? PeakMemoryBytes { get; init; }
    /// <summary>Anything else worth keeping (e.g. AdaLoRA's final rank pattern), written under "extra".</summary>
    public IReadOnlyDictionary<string, string> Extra { get; init; } = new Dictionary<string, string>();
    /// <summary>The epoch whose metrics <see cref="Metrics"/> holds when it is not the last (best-epoch selection), or null.</summary>
    public int? SelectedEpoch { get; init; }
    /// <summary>How <see cref="SelectedEpoch"/> was chosen, for people; null without selection.</summary>
    public string? Selection { get; init; }
    /// <summary>The run's model card, written as model-card.json beside metrics.json (null: none).</summary>
    public RunCard? Card { get; init; }
}

/// <summary>The seam between the runner and training: the lead implements this against Lora.Core.</summary>
public interface IRunExecutor
{
    /// <summary>Train and evaluate one run; write checkpoints/adapters under <see cref="RunContext.ArtifactsDir"/>.
    /// Throw to fail the run (its message is recorded); observe <paramref name="ct"/> between steps.</summary>
    RunResult Execute(ResolvedRun run, RunContext ctx, CancellationToken ct);
}
