using Lora.Core.IO;
using Lora.Core.Training;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Lora.Dsl;

namespace Lora.Runner;

public sealed record RunSummary(int Ran, int Skipped, int Failed, int Blocked)
{
    public bool Ok => Failed == 0 && Blocked == 0;
}

/// <summary>Executes the selected runs of a plan in dependency order, one claim and one atomic result each.</summary>
public sealed class PlanRunner(ResultsStore store, IRunExecutor executor, TextWriter log)
{
    /// <param name="forced">hashes to run again even if done (--force applies to the runs --only matched, not to their bases)</param>
    public RunSummary Execute(IReadOnlyList<PlannedRun> selected, string? deviceOverride, IReadOnlySet<string> forced, string commandLine, CancellationToken ct = default)
    {
        int ran = 0, skipped = 0, failed = 0, blocked = 0;
        foreach (var p in selected)
        {
            ct.ThrowIfCancellationRequested();
            var run = p.Run;
            var force = forced.Contains(run.Hash);
            if (!force && store.IsDone(run.Hash))
            {
                skipped++;
                continue;
            }
            if (run.DependsOn is { } dep && !store.IsDone(dep))
            {
                log.WriteLine($"blocked  {run.Hash} {run.Id}: its base run {dep} has no result yet");
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
        log.WriteLine($"{ran} ran, {skipped} skipped, {failed} failed, {blocked} blocked");
        return new RunSummary(ran, skipped, failed, blocked);
    }

    bool RunOne(ResolvedRun run, string? deviceOverride, string commandLine, CancellationToken ct)
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
            store.Save(Record(run, result, clock.Elapsed.TotalSeconds, provenance));
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
                Kind = s.Kind.IsPretraining ? "pretraining" : "tuning",
                Experiment = s.Experiment,
                Name = s.Name,
                Method = s.Method.Name,
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
