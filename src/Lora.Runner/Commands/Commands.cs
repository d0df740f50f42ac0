using System.Text.Json;
using System.Text.Json.Nodes;
using Lora.CommandLine;
using Lora.Core.IO;
using Lora.Dsl;
using Microsoft.FSharp.Collections;

namespace Lora.Runner;

/// <summary>The `lora` subcommands; each returns the process exit code (0 ok, 1 failure, 2 bad input).</summary>
public static class Commands
{
    public static int Dispatch(string[] args, Func<IRunExecutor> executorFactory, TextWriter stdout, TextWriter stderr, CancellationToken ct = default)
    {
        var parsed = Lora.CommandLine.CommandLine.Parse(args);
        if (parsed.Command is null)
        {
            (parsed.ExitCode == 0 ? stdout : stderr).WriteLine(parsed.Message);
            return parsed.ExitCode;
        }
        try
        {
            return parsed.Command.Accept(new Handler(executorFactory, parsed.Command.CommandLine, stdout, stderr, ct));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or Lora.Core.Onnx.OnnxImportException)
        {
            stderr.WriteLine($"lora: {e.Message}");
            return 1;
        }
    }

    /// One method per command (a new command does not compile until it is handled here).
    sealed class Handler(Func<IRunExecutor> executorFactory, string commandLine, TextWriter stdout, TextWriter stderr, CancellationToken ct) : ICommandHandler<int>
    {
        public int Validate(ValidateOptions o) => Commands.Validate(o.Spec, stdout, stderr);
        public int Plan(PlanOptions o) => PlanCommand(o, stdout, stderr);
        public int Run(RunOptions o) => RunCommand(o, executorFactory(), commandLine, stdout, stderr, ct);
        public int Tables(TablesOptions o) => TablesCommand(o, stdout, stderr);
        public int Submit(SubmitOptions o) => Slurm.PlanToSlurm.Submit(o, stdout, stderr);
        public int Status(StatusOptions o) => Slurm.PlanToSlurm.Status(o, stdout, stderr);
        public int Bench(BenchOptions o) => BenchCommand.Run(o, stdout, stderr);
        public int Version() => Print(stdout, $"lora {Lora.Dsl.Version.value}");
        public int Summary(SummaryOptions o) => Guarded("summary", () => SummaryCommand.Run(o, stdout, stderr), stderr);
        public int Merge(MergeOptions o) => Guarded("merge", () => MergeCommand.Run(o, stdout), stderr);
        public int Predict(PredictOptions o) => Guarded("predict", () => PredictCommand.Run(o, stdout, stderr), stderr);
        public int Forward(ForwardOptions o) => Guarded("forward", () => ForwardCommand.Run(o, stdout), stderr);
        public int Export(ExportOptions o) => Guarded("export", () => ExportCommand.Run(o, stdout), stderr);
        public int Combine(CombineOptions o) => Guarded("combine", () => CombineCommand.Run(o, stdout), stderr);
        public int Eval(EvalOptions o) => Guarded("eval", () => EvalCommand.Run(o, stdout, stderr), stderr);
        public int Adapters(AdaptersOptions o) => Guarded("adapters", () => AdaptersCommand.Run(o, stdout), stderr);
    }

    static int Print(TextWriter w, string line) { w.WriteLine(line); return 0; }

    /// Runs a model command so that whatever goes wrong ends in one line on stderr, never a stack
    /// trace: a bad model name or argument exits 2, a file that cannot be used (missing, corrupt,
    /// for another model) exits 1.
    static int Guarded(string command, Func<int> body, TextWriter stderr)
    {
        try { return body(); }
        catch (BadModelException e) { stderr.WriteLine($"lora {command}: {ModelSource.OneLine(e.Message)}"); return 2; }
        catch (OperationCanceledException) { throw; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or ArgumentException or NotSupportedException or InvalidOperationException or Lora.Core.Onnx.OnnxImportException)
        {
            stderr.WriteLine($"lora {command}: {ModelSource.OneLine(e.Message)}");
            return 1;
        }
        catch (Exception e)
        {
            var inner = Lora.Core.Training.NativeError.Unwrap(e);
            var kind = inner is System.Runtime.InteropServices.ExternalException or IOException or InvalidDataException or ArgumentException ? "" : inner.GetType().Name + ": ";
            stderr.WriteLine($"lora {command}: {kind}{Lora.Core.Training.NativeError.Summary(inner)}");
            return 1;
        }
    }

    /// <summary>Loads and checks a spec; prints every warning ("FILE:LINE:COL: warning: ...") and every
    /// problem on its own line to <paramref name="stderr"/>. Warnings do not stop the command.</summary>
    public static FSharpList<Experiment>? LoadSpec(string path, TextWriter stderr) => LoadSpec(path, stderr, checkRuns: false);

    /// <summary><see cref="LoadSpec(string, TextWriter)"/>; with <paramref name="checkRuns"/>, each run's method is also
    /// applied to its model on the meta device, and what the core would refuse is an error at its method's or model's line.</summary>
    public static FSharpList<Experiment>? LoadSpec(string path, TextWriter stderr, bool checkRuns)
    {
        // a FIFO, /dev/zero or a huge file is refused before the spec reader opens it
        if (File.Exists(path) && !Directory.Exists(path))
            try { Lora.Core.IO.InputFile.Check(path, Lora.Core.IO.InputFile.MaxTextBytes, "spec"); }
            catch (InvalidDataException e) { stderr.WriteLine($"{path}: spec: {e.Message}"); return null; }
        // what building each model would refuse is a spec error at its option's line
        var check = checkRuns ? Lora.Conversion.ToCore.validateSpec(path) : Lora.Conversion.ToCore.checkSpec(path);
        foreach (var w in check.Warnings) stderr.WriteLine(w.ToWarningString());
        if (check.Result.IsOk) return check.Result.ResultValue;
        // the core's messages may span lines (key listings): one line per problem
        foreach (var e in check.Result.ErrorValue) stderr.WriteLine(checkRuns ? ModelSource.OneLine(e.ToString()) : e.ToString());
        return null;
    }

    /// An .fsx spec is F# code: loading it runs it, with the user's rights. Said before it runs.
    static void NoteScript(string spec, string verb, TextWriter stderr)
    {
        if (spec.EndsWith(".fsx", StringComparison.OrdinalIgnoreCase))
            stderr.WriteLine($"note: {spec} is an F# script: {verb} runs its code, with your rights; run only scripts you trust (YAML specs and adapter configs are never executed)");
    }

    public static int Validate(string spec, TextWriter stdout, TextWriter stderr)
    {
        NoteScript(spec, "validating it", stderr);
        // the method applied to each run's model on the meta device: what the core would refuse
        // when the run starts is reported now, at its method's (or model's) line
        var experiments = LoadSpec(spec, stderr, checkRuns: true);
        if (experiments is null) return 2;
        var all = Spec.runs(experiments).ToList();
        var runs = all.Select(r => new ResolvedRun(r)).Select(r => r.Hash).Distinct().Count();
        stdout.WriteLine($"{spec}: ok ({experiments.Length} experiment(s), {runs} run(s))");
        return 0;
    }

    public static int PlanCommand(PlanOptions o, TextWriter stdout, TextWriter stderr)
    {
        NoteScript(o.Spec, "planning it", stderr);
        var experiments = LoadSpec(o.Spec, stderr);
        if (experiments is null) return 2;
        var store = new ResultsStore(o.Results);
        var plan = Plan.Compile(experiments, store);
        var slurmFailed = Slurm.PlanToSlurm.FailedTasks(plan, store, stderr);
        if (o.Json)
        {
            var json = plan.ToJson();
            foreach (var node in json)
            {
                if (node is JsonObject run && slurmFailed.TryGetValue((string)run["hash"]!, out var slurmLog))
                {
                    run["status"] = "failed";
                    run["log"] = slurmLog;
                }
                if (node is JsonObject r && plan.Runs.First(p => p.Hash == (string)r["hash"]!) is var pr && pr.Status == RunState.Done)
                {
                    if (plan.ArtifactsMissing(pr, store)) r["artifacts"] = "missing";
                    if (store.CommitOf(pr.Hash) is { } commit) r["commit"] = commit;
                }
            }
            stdout.WriteLine(json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        // the code version is provenance, not identity: a result made at another commit says which
        var head = Provenance.GitCommit();
        string Done(PlannedRun r) =>
            store.CommitOf(r.Hash) is { Length: >= 7 } c && head is not null && c != head ? $"done (made at commit {c[..7]})" : "done";
        var rows = plan.Runs.Select(r => new[]
        {
            r.Hash, r.Id, r.Run.Needs.Any() ? string.Join(",", r.Run.Needs) : "-",
            r.Status == RunState.Failed ? $"failed (log: {store.LogPath(r.Hash)})"
            : slurmFailed.TryGetValue(r.Hash, out var slurmLog) ? $"failed in Slurm (log: {slurmLog})"
            : plan.ArtifactsMissing(r, store) ? Done(r) + ", artifacts missing (lora run recomputes them)"
            : r.Status == RunState.Done ? Done(r)
            : r.Status.ToString().ToLowerInvariant(),
        }).ToList();
        var header = new[] { "hash", "name", "dependsOn", "status" };
        var widths = header.Select((h, i) => rows.Select(r => r[i].Length).Append(h.Length).Max()).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((c, i) => i == cells.Length - 1 ? c : c.PadRight(widths[i]))).TrimEnd();
        stdout.WriteLine(Line(header));
        foreach (var r in rows) stdout.WriteLine(Line(r));
        var done = plan.Runs.Count(r => r.Status == RunState.Done);
        stdout.WriteLine($"{plan.Runs.Count} runs in {plan.Levels.Count} level(s): {done} done, {plan.Runs.Count - done} to run");
        return 0;
    }

    public static int RunCommand(RunOptions o, IRunExecutor executor, string commandLine, TextWriter stdout, TextWriter stderr, CancellationToken ct = default)
    {
        // several specs make one plan (the README's main job runs two), each checked in full first
        var loaded = o.Specs.Select(spec => LoadSpec(spec, stderr)).ToList();
        if (loaded.Any(e => e is null)) return 2;
        var experiments = ListModule.OfSeq<Experiment>(loaded.SelectMany(e => e!));
        var store = new ResultsStore(o.Results);
        var plan = Plan.Compile(experiments, store);
        var selected = plan.Select(o.Only, o.ShardIndex, o.ShardCount);
        if (o.Only is not null && !plan.Runs.Any(r => Plan.Matches(o.Only, r)))
        {
            stderr.WriteLine($"--only '{o.Only}' matches no run; `lora plan {string.Join(" ", o.Specs)}` lists them");
            return 2;
        }
        var forced = o.Force
            ? selected.Where(r => o.Only is null || Plan.Matches(o.Only, r)).Select(r => r.Hash).ToHashSet()
            : [];
        DeclaredTables.Save(store, experiments);
        if (o.Verify) return Verify(o, experiments, selected, store, executor, commandLine, stdout, stderr, ct);
        // a done run that --only names is recomputed when its artifacts are missing
        var wanted = o.Only is null ? null : selected.Where(r => Plan.Matches(o.Only, r)).Select(r => r.Hash).ToHashSet();
        var summary = new PlanRunner(store, executor, stdout).Execute(selected, o.Device, forced, commandLine, ct, wanted);
        // Tables come from whatever results exist, so they are worth regenerating after a partial run too.
        if (o.Tables is not null) WriteTables(store, o.Tables, experiments, stdout);
        return summary.Ok ? 0 : 1;
    }

    /// <summary>`lora run SPEC... --verify`: every committed result of the selection is recomputed (its
    /// base runs too) with its metrics in a scratch folder and its weights in the artifacts folder,
    /// then compared with the committed one bit for bit; any difference is reported by run and value
    /// (exit 1). --write-tables writes the tables of the committed results.</summary>
    static int Verify(RunOptions o, IEnumerable<Experiment> experiments, IReadOnlyList<PlannedRun> selected, ResultsStore store, IRunExecutor executor, string commandLine,
        TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var committed = selected.Where(r => store.IsDone(r.Hash)).ToList();
        if (committed.Count == 0)
        {
            stderr.WriteLine($"--verify: no run of {string.Join(" ", o.Specs)} has a committed result in {store.Root}: nothing to verify (lora run without --verify runs them)");
            return 2;
        }
        var byHash = selected.ToDictionary(r => r.Hash);
        var keep = new HashSet<string>();
        void Add(PlannedRun r) { if (keep.Add(r.Hash)) foreach (var d in r.Run.Needs) if (byHash.TryGetValue(d, out var dep)) Add(dep); }
        foreach (var r in committed) Add(r);
        var toRun = selected.Where(r => keep.Contains(r.Hash)).ToList();
        var scratchRoot = Path.Combine(store.ArtifactsRoot, ".verify");
        if (Directory.Exists(scratchRoot)) Directory.Delete(scratchRoot, recursive: true);
        var scratch = new ResultsStore(Path.Combine(scratchRoot, "results"), store.ArtifactsRoot);
        stdout.WriteLine($"verify: recomputing {toRun.Count} run(s) ({committed.Count} committed) into {scratch.Root}");
        var summary = new PlanRunner(scratch, executor, stdout).Execute(toRun, o.Device, new HashSet<string>(), commandLine, ct);
        int differing = 0, missing = 0;
        foreach (var r in committed)
        {
            if (!scratch.IsDone(r.Hash)) { missing++; stdout.WriteLine($"NOT RECOMPUTED {r.Hash} {r.Id}: the recomputation failed (see above)"); continue; }
            var differences = ResultComparison.Differences(ResultComparison.Read(store.MetricsPath(r.Hash)), ResultComparison.Read(scratch.MetricsPath(r.Hash)));
            if (differences.Count == 0) { stdout.WriteLine($"verified  {r.Hash} {r.Id}: equal bit for bit"); continue; }
            differing++;
            stdout.WriteLine($"DIFFERENT {r.Hash} {r.Id}: {differences.Count} value(s) differ from the committed result:");
            foreach (var d in differences) stdout.WriteLine($"  {r.Id}: {d}");
        }
        stdout.WriteLine($"verify: {committed.Count - differing - missing} of {committed.Count} committed result(s) reproduced bit for bit, {differing} differ, {missing} not recomputed");
        // the tables are the committed results' (just checked): the recomputed ones differ at least in
        // their times, and committed tables regenerate byte-identically
        if (o.Tables is not null) WriteTables(store, o.Tables, experiments, stdout);
        return summary.Ok && differing == 0 && missing == 0 ? 0 : 1;
    }

    public static int TablesCommand(TablesOptions o, TextWriter stdout, TextWriter stderr)
    {
        var loaded = o.Specs.Select(spec => LoadSpec(spec, stderr)).ToList();
        if (loaded.Any(e => e is null)) return 2;
        WriteTables(new ResultsStore(o.Results), o.Out, loaded.SelectMany(e => e!), stdout);
        return 0;
    }

    /// Tables from whatever results exist; an experiment among <paramref name="experiments"/> gets the
    /// tables it declares (or the default layout), any other the tables its last `lora run` kept.
    static void WriteTables(ResultsStore store, string outDir, IEnumerable<Experiment> experiments, TextWriter stdout)
    {
        // the specs in hand decide for their experiments (declaring none means the default layout)
        var declared = DeclaredTables.Load(store);
        foreach (var e in experiments.GroupBy(e => SafeName.ForFile(e.Name)).Select(g => g.First()))
            if (e.Tables.IsEmpty) declared.Remove(SafeName.ForFile(e.Name));
            else declared[SafeName.ForFile(e.Name)] = e.Tables.ToList();
        var files = Tables.Generate(store, outDir, declared);
        foreach (var f in files) stdout.WriteLine(Path.GetRelativePath(Directory.GetCurrentDirectory(), f));
        if (files.Count == 0) stdout.WriteLine($"no results in {Path.GetRelativePath(Directory.GetCurrentDirectory(), store.Root)}: nothing to tabulate");
    }
}
