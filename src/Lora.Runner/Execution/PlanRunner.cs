using Lora.Core.IO;
using Lora.Core.Training;
using System.Diagnostics;
using System.Text.Json;
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
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

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
            var metrics = MetricsJson(run, result, clock.Elapsed.TotalSeconds, provenance);
            // the card first: metrics.json is what marks the run done
            if (result.Card is { } card) RunCard.Write(store.CardPath(run.Hash), card);
            AtomicFile.WriteAllText(store.MetricsPath(run.Hash), metrics.ToJsonString(Indented) + "\n");
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

    /// <summary>The metrics.json document of a finished run.</summary>
    public static JsonObject MetricsJson(ResolvedRun run, RunResult r, double wallSeconds, JsonObject provenance)
    {
        var s = run.Spec;
        var metrics = new JsonObject();
        foreach (var kv in r.Metrics.OrderBy(kv => kv.Key, StringComparer.Ordinal)) metrics[kv.Key] = kv.Value;
        var extra = new JsonObject();
        foreach (var kv in r.Extra.OrderBy(kv => kv.Key, StringComparer.Ordinal)) extra[kv.Key] = kv.Value;
        return new JsonObject
        {
            ["hash"] = run.Hash,
            ["id"] = run.Id,
            ["labels"] = new JsonObject
            {
                ["kind"] = s.Kind.IsPretraining ? "pretraining" : "tuning",
                ["experiment"] = s.Experiment,
                ["name"] = s.Name,
                ["method"] = s.Method.Name,
                ["rank"] = s.RankValue,
                ["model"] = Grid.modelLabel(s.Model),
                ["zoo"] = s.Model.ZooModel.Name,
                ["dataset"] = Grid.datasetLabel(s.Dataset),
                ["task"] = Canonical.taskName(s.Task),
                ["seed"] = s.Seed,
            },
            ["depends_on"] = run.DependsOn,
            ["config"] = JsonNode.Parse(run.ConfigJson),
            ["metrics"] = metrics,
            ["params"] = new JsonObject { ["total"] = r.TotalParams, ["trainable"] = r.TrainableParams },
            ["timings"] = new JsonObject { ["train_seconds"] = r.TrainSeconds, ["wall_seconds"] = Math.Round(wallSeconds, 3) },
            ["peak_memory_bytes"] = r.PeakMemoryBytes,
            ["curve"] = new JsonArray(r.Curve.Select(c => (JsonNode)new JsonObject
            {
                ["epoch"] = c.Epoch,
                ["step"] = c.Step,
                ["train_loss"] = c.TrainLoss,
                ["val_loss"] = c.ValLoss,
                ["val_metric"] = c.ValMetric,
            }).ToArray()),
            ["extra"] = extra,
            ["provenance"] = provenance,
        };
    }
}
