using Lora.Core.IO;
using Lora.Core.Training;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Lora.Dsl;

namespace Lora.Runner;

public sealed record RunSummary(int Ran, int Skipped, int Failed, int Blocked)
{
    public bool Ok => Failed == 0 && Blocked == 0;
    /// <summary>Done runs run again for their missing artifacts (their committed metrics kept).</summary>
    public int Recomputed { get; init; }
    /// <summary>Of those, the runs whose recomputed metrics differ from the committed ones.</summary>
    public int Differing { get; init; }
}

/// <summary>Executes the selected runs of a plan in dependency order, one claim and one atomic result each.</summary>
public sealed class PlanRunner(ResultsStore store, IRunExecutor executor, TextWriter log)
{
    /// <param name="forced">hashes to run again even if done (--force applies to the runs --only matched, not to their bases)</param>
    /// <param name="wanted">done runs whose artifacts are wanted (--only matched them): recomputed when missing</param>
    public RunSummary Execute(IReadOnlyList<PlannedRun> selected, string? deviceOverride, IReadOnlySet<string> forced, string commandLine, CancellationToken ct = default,
        IReadOnlySet<string>? wanted = null)
    {
        int ran = 0, skipped = 0, failed = 0, blocked = 0, recomputed = 0, differing = 0;
        // the base runs whose weights a run that will execute starts from
        var needed = selected.Where(r => forced.Contains(r.Hash) || !store.IsDone(r.Hash))
            .SelectMany(r => r.Run.Needs).ToHashSet();
        foreach (var p in selected)
        {
            ct.ThrowIfCancellationRequested();
            var run = p.Run;
            var force = forced.Contains(run.Hash);
            if (!force && store.IsDone(run.Hash))
            {
                if ((needed.Contains(run.Hash) || wanted?.Contains(run.Hash) == true) && !store.HasWeights(run.Hash))
                {
                    // committed results carry no weights: recompute them, and check the metrics come out the same
                    using var recomputeClaim = store.TryClaim(run.Hash);
                    if (recomputeClaim is not null && !store.HasWeights(run.Hash))
                    {
                        log.WriteLine($"recompute {run.Hash} {run.Id}: done, but its artifacts are missing ({store.ArtifactsDir(run.Hash)})");
                        var ok = RunOne(run, deviceOverride, commandLine, ct, recompute: true);
                        if (!ok) { failed++; continue; }
                        recomputed++;
                        if (!ReportComparison(run, store.MetricsPath(run.Hash), store.RecomputedMetricsPath(run.Hash))) differing++;
                        continue;
                    }
                }
                skipped++;
                continue;
            }
            if (run.Needs.FirstOrDefault(n => !store.IsDone(n)) is { } dep)
            {
                log.WriteLine($"blocked  {run.Hash} {run.Id}: its {(dep == run.DependsOn ? "base" : "combined")} run {dep} has no result yet");
                blocked++;
                continue;
            }
            // an I/O error here (a full disk, a link in the run's folders) is not contention: it
            // propagates and stops the plan with the OS's reason (exit 1)
            using var claim = store.TryClaim(run.Hash);
            if (claim is null)
            {
                log.WriteLine($"claimed  {run.Hash} {run.Id}: another runner is on it, skipping");
                skipped++;
                continue;
            }
            if (!force && store.IsDone(run.Hash))
            {
                log.WriteLine($"done     {run.Hash} {run.Id}");
                skipped++;
                continue;
            }
            if (RunOne(run, deviceOverride, commandLine, ct)) ran++; else failed++;
        }
        log.WriteLine($"{ran} ran, {skipped} skipped, {failed} failed, {blocked} blocked" +
            (recomputed > 0 ? $", {recomputed} recomputed for missing artifacts ({differing} with different metrics)" : ""));
        return new RunSummary(ran, skipped, failed, blocked) { Recomputed = recomputed, Differing = differing };
    }

    /// Says loudly, by run and metric, where a recomputed result differs from the committed one;
    /// true when they are equal bit for bit.
    bool ReportComparison(ResolvedRun run, string committedPath, string recomputedPath)
    {
        var differences = ResultComparison.Differences(ResultComparison.Read(committedPath), ResultComparison.Read(recomputedPath));
        if (differences.Count == 0)
        {
            log.WriteLine($"  reproduced: the recomputed metrics of {run.Id} equal the committed ones bit for bit");
            return true;
        }
        log.WriteLine($"DIFFERENT {run.Hash} {run.Id}: the recomputed result differs from the committed one ({differences.Count} value(s); committed kept, recomputed in {recomputedPath}):");
        foreach (var d in differences) log.WriteLine($"  {run.Id}: {d}");
        return false;
    }

    /// <param name="recompute">a done run rerun for its artifacts: its metrics go beside them, the committed ones stay</param>
    bool RunOne(ResolvedRun run, string? deviceOverride, string commandLine, CancellationToken ct, bool recompute = false)
    {
        var resultDir = store.ResultDir(run.Hash);
        var artifacts = SafePath.CreateDirectory(store.ArtifactsRoot, store.ArtifactsDir(run.Hash));
        AtomicFile.CleanStaleTemps(resultDir);
        AtomicFile.CleanStaleTemps(artifacts);
        if (File.Exists(store.FailedPath(run.Hash))) File.Delete(store.FailedPath(run.Hash));
        // never truncated or followed: whatever stood at log.txt is removed and a new file created
        using var logFile = new StreamWriter(SafePath.CreateFresh(store.ArtifactsRoot, store.LogPath(run.Hash))) { AutoFlush = true };
        var device = deviceOverride ?? Canonical.deviceName(run.Spec.Training.Device);
        void Log(string line) { log.WriteLine($"  {line}"); logFile.WriteLine(line); }
        var ctx = new RunContext
        {
            ResultDir = resultDir,
            ArtifactsDir = artifacts,
            BaseArtifactsDir = run.DependsOn is { } d ? store.ArtifactsDir(d) : null,
            BaseCardPath = run.DependsOn is { } b ? store.CardPath(b) : null,
            SourceArtifactsDirs = run.Sources.Select(store.ArtifactsDir).ToList(),
            Device = device,
            Log = Log,
            LogFileOnly = logFile.WriteLine,
        };
        log.WriteLine($"run      {run.Hash} {run.Id}");
        var provenance = Provenance.Describe(device, commandLine);
        var clock = Stopwatch.StartNew();
        try
        {
            var result = executor.Execute(run, ctx, ct);
            RunResultCheck.RequireFinite(result);
            var record = Record(run, result, clock.Elapsed.TotalSeconds, provenance);
            // the card first: metrics.json is what marks the run done (a recomputation keeps a committed card)
            if (result.Card is { } card && !(recompute && File.Exists(store.CardPath(run.Hash)))) RunCard.Write(store.CardPath(run.Hash), card);
            if (recompute) AtomicFile.WriteAllText(store.RecomputedMetricsPath(run.Hash), RunRecordJson.Write(record));
            else store.Save(record);
            return true;
        }
        catch (OperationCanceledException) { throw; }
        catch (Exception e)
        {
            var message = NativeError.Summary(e);
            Log($"failed: {message}");
            try { AtomicFile.WriteAllText(store.FailedPath(run.Hash), $"{run.Id} failed: {message}\n\n{e}\n"); }
            catch (Exception w) when (w is IOException or UnauthorizedAccessException) { Log($"(failed.txt not written: {w.Message})"); }
            log.WriteLine($"failed   {run.Hash} {run.Id}: {message} (log: {store.LogPath(run.Hash)})");
            return false;
        }
    }

    /// <summary>The record (metrics.json) of a finished run.</summary>
    public static RunRecord Record(ResolvedRun run, RunResult r, double wallSeconds, JsonObject provenance)
    {
        var s = run.Spec;
        return new RunRecord
        {
            Hash = run.Hash,
            Id = run.Id,
            Labels = new RunLabels
            {
                // a combination is a tune in tables (a row of its own: its name is its method's)
                Kind = s.Kind.IsPretraining ? "pretraining" : "tuning",
                Experiment = s.Experiment,
                Name = s.Name,
                Method = s.Kind is RunKind.Combining ? s.Name : s.Method.Name,
                Rank = s.RankValue,
                Model = Grid.modelLabel(s.Model),
                Zoo = s.Model.ZooModel.Name,
                Dataset = Grid.datasetLabel(s.Dataset),
                Task = Canonical.taskName(s.Task),
                Seed = s.Seed,
            },
            DependsOn = run.DependsOn,
            Config = JsonNode.Parse(run.ConfigJson)!.AsObject(),
            Metrics = new SortedDictionary<string, double>(r.Metrics.ToDictionary(), StringComparer.Ordinal),
            Params = new RunParams { Total = r.TotalParams, Trainable = r.TrainableParams },
            Timings = new RunTimings { TrainSeconds = r.TrainSeconds, WallSeconds = Math.Round(wallSeconds, 3) },
            PeakMemoryBytes = r.PeakMemoryBytes,
            Curve = r.Curve,
            Extra = new SortedDictionary<string, string>(r.Extra.ToDictionary(), StringComparer.Ordinal),
            Provenance = provenance,
            SelectedEpoch = r.SelectedEpoch,
            Selection = r.Selection,
        };
    }
}
