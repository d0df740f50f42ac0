using Lora.Core.IO;

namespace Lora.Runner;

/// <summary>A run's state, locally and in Slurm alike: pending (not started, or queued), running, done
/// (its record exists), failed (it ended without one).</summary>
public enum RunState { Pending, Running, Done, Failed }

/// <summary>
/// The results folder: results/&lt;hash&gt;/metrics.json (committed, small text), and beside it
/// results-artifacts/&lt;hash&gt;/ (checkpoints, adapters, logs, failure notes; ignored by git).
/// </summary>
public sealed class ResultsStore
{
    public const string MetricsFile = "metrics.json";
    public const string LockFile = "run.lock";
    public const string FailedFile = "failed.txt";
    public const string LogFile = "log.txt";

    public ResultsStore(string root)
    {
        Root = Path.GetFullPath(root);
        var parent = Path.GetDirectoryName(Root.TrimEnd(Path.DirectorySeparatorChar)) ?? Root;
        ArtifactsRoot = Path.Combine(parent, Path.GetFileName(Root.TrimEnd(Path.DirectorySeparatorChar)) + "-artifacts");
    }

    /// <summary>Results in one folder, artifacts in another (`run --verify`: metrics to a scratch
    /// folder, weights to the real artifacts folder).</summary>
    public ResultsStore(string root, string artifactsRoot)
    {
        Root = Path.GetFullPath(root);
        ArtifactsRoot = Path.GetFullPath(artifactsRoot);
    }

    public string Root { get; }
    public string ArtifactsRoot { get; }

    public string ResultDir(string hash) => Path.Combine(Root, hash);
    public string ArtifactsDir(string hash) => Path.Combine(ArtifactsRoot, hash);
    public string MetricsPath(string hash) => Path.Combine(ResultDir(hash), MetricsFile);
    public string FailedPath(string hash) => Path.Combine(ArtifactsDir(hash), FailedFile);
    public string LogPath(string hash) => Path.Combine(ArtifactsDir(hash), LogFile);
    /// <summary>results/&lt;hash&gt;/model-card.json: what a run's consumers rebuild it from.</summary>
    public string CardPath(string hash) => Path.Combine(ResultDir(hash), RunCard.FileName);

    public bool IsDone(string hash) => File.Exists(MetricsPath(hash));

    /// <summary>The commit a done run's result was made at (its provenance), or null when unknown.</summary>
    public string? CommitOf(string hash)
    {
        try { return (Load(hash)?.Provenance?["commit"] as System.Text.Json.Nodes.JsonValue)?.TryGetValue<string>(out var c) == true ? c : null; }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>The metrics of a done run recomputed for its missing artifacts (beside them, not committed).</summary>
    public string RecomputedMetricsPath(string hash) => Path.Combine(ArtifactsDir(hash), "recomputed-" + MetricsFile);

    /// <summary>Whether the run's trained weights are there (the model file, or the adapter's).</summary>
    public bool HasWeights(string hash) =>
        File.Exists(Path.Combine(ArtifactsDir(hash), TrainingExecutor.ModelFile))
        || File.Exists(Path.Combine(ArtifactsDir(hash), TrainingExecutor.AdapterFolder, Lora.Core.Tuning.AdapterCheckpoint.WeightsFile));

    public RunState StatusOf(string hash)
    {
        if (IsDone(hash)) return RunState.Done;
        if (IsClaimed(hash)) return RunState.Running;
        if (File.Exists(FailedPath(hash))) return RunState.Failed;
        return RunState.Pending;
    }

    /// <summary>Whether another runner holds the run's claim right now (a lock file held open).</summary>
    public bool IsClaimed(string hash)
    {
        var path = Path.Combine(ResultDir(hash), LockFile);
        if (!File.Exists(path) || new FileInfo(path).LinkTarget is not null) return false;
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.None);
            return false;
        }
        catch (IOException e) when (IsSharingViolation(e)) { return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>
    /// Claims a run for this process: the lock file is held open exclusively (an advisory lock the OS
    /// releases when the process dies, so a killed runner never blocks a rerun). Null if another runner
    /// holds it. Any other failure (a full disk, a symbolic link in the run's folders, a folder that
    /// cannot be created) throws with the OS's reason: it is not "someone else is on it".
    /// </summary>
    public RunClaim? TryClaim(string hash)
    {
        var dir = SafePath.CreateDirectory(Root, ResultDir(hash));
        SafePath.RefuseLinksUnder(Root, dir);
        SafePath.RefuseLinksUnder(ArtifactsRoot, ArtifactsDir(hash));
        var path = Path.Combine(dir, LockFile);
        FileStream? fs = null;
        bool created = false;
        try
        {
            // an existing lock (left by a killed runner) is opened as it is, never truncated
            try { fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None); created = true; }
            catch (IOException) when (File.Exists(path)) { fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None); }
            if (created)
            {
                fs.Write(System.Text.Encoding.UTF8.GetBytes($"{Environment.ProcessId}@{Environment.MachineName}\n"));
                fs.Flush();
            }
            return new RunClaim(fs, path);
        }
        catch (IOException e) when (IsSharingViolation(e)) { fs?.Dispose(); return null; }
        catch
        {
            fs?.Dispose();
            if (created) try { File.Delete(path); } catch (IOException) { }
            throw;
        }
    }

    /// A lock another process holds: on Unix .NET's flock fails with EWOULDBLOCK, whose errno is the
    /// HResult (11 on Linux, 35 on macOS); on Windows ERROR_SHARING_VIOLATION. Every other
    /// IOException (ENOSPC, EIO, EROFS...) is a real failure.
    static bool IsSharingViolation(IOException e) =>
        OperatingSystem.IsWindows() ? (e.HResult & 0xFFFF) == 32 : e.HResult == (OperatingSystem.IsLinux() ? 11 : 35);

    /// <summary>Every run record under the root, ordered by hash (so tables do not depend on directory order).
    /// A file that is not a valid record is an error naming it.</summary>
    public IReadOnlyList<RunRecord> LoadAll()
    {
        if (!Directory.Exists(Root)) return [];
        var list = new List<RunRecord>();
        foreach (var dir in Directory.GetDirectories(Root).OrderBy(d => Path.GetFileName(d), StringComparer.Ordinal))
        {
            var file = Path.Combine(dir, MetricsFile);
            if (File.Exists(file)) list.Add(RunRecordJson.ReadFile(file));
        }
        return list;
    }

    /// <summary>The record of a finished run, or null when it has none yet.</summary>
    public RunRecord? Load(string hash) => IsDone(hash) ? RunRecordJson.ReadFile(MetricsPath(hash)) : null;

    /// <summary>Writes a finished run's record atomically (last: its existence is what "done" means).</summary>
    public void Save(RunRecord record) => AtomicFile.WriteAllText(MetricsPath(record.Hash), RunRecordJson.Write(record));
}

/// <summary>A held claim; disposing releases it and removes the lock file.</summary>
public sealed class RunClaim(FileStream stream, string path) : IDisposable
{
    public void Dispose()
    {
        try { File.Delete(path); } catch (IOException) { }
        stream.Dispose();
    }
}
