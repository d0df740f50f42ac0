using System.Text;

namespace Lora.Runner.Slurm;

/// What every array task runs: `<lora> run SPEC --results DIR --only <hash> [extra args]`, started in
/// WorkingDirectory so that relative paths inside the spec resolve as they do for a local run.
public sealed record LoraInvocation(
    LoraCommand Command, string SpecPath, string ResultsDir, string WorkingDirectory, IReadOnlyList<string> ExtraRunArgs)
{
    public LoraInvocation(LoraCommand command, string specPath, string resultsDir)
        : this(command, Path.GetFullPath(specPath), Path.GetFullPath(resultsDir), Environment.CurrentDirectory, []) { }

    /// The command line of one task, with the hash left to the shell variable $hash.
    internal string TaskCommandLine() =>
        Command.ToShell(["run", SpecPath, "--results", ResultsDir])
        + " --only \"$hash\""
        + string.Concat(ExtraRunArgs.Select(a => " " + Shell.Quote(a)));
}

/// One job array: a bash script with #SBATCH directives and, beside it, a list file whose line i+1
/// is the hash of the run that array task i executes.
public sealed record SbatchScript(
    string Name, int Level, IReadOnlyList<SlurmRun> Runs,
    string ScriptPath, string RunListPath, string LogDirectory, string Text, string RunListText)
{
    /// The log of one array task: Slurm expands `%A_%a` into `<array job id>_<task index>`.
    public string LogPath(string arrayJobId, int index) => Path.Combine(LogDirectory, $"{arrayJobId}_{index}.log");

    /// Builds the script for the given runs (one array task each, in order); writes nothing.
    public static SbatchScript Create(
        string name, int level, IReadOnlyList<SlurmRun> runs, LoraInvocation lora, SlurmOptions options, string directory)
    {
        if (runs.Count == 0) throw new ArgumentException($"job array {name} has no runs: a level with nothing left is skipped, not submitted.");
        foreach (var r in runs) SlurmRun.CheckHash(r.Hash, $"run '{r.Name}'");
        var scriptPath = Path.Combine(directory, name + ".sbatch");
        var listPath = Path.Combine(directory, name + ".runs");
        var logDir = Path.Combine(directory, "logs");

        var array = $"0-{runs.Count - 1}" + (options.MaxParallel is int p && p < runs.Count ? $"%{p}" : "");
        var s = new StringBuilder();
        s.Append("#!/bin/bash\n");
        s.Append($"# lora plan, dependency level {level}: {runs.Count} run(s), one per array task;\n");
        s.Append($"# task i runs the hash on line i+1 of {Path.GetFileName(listPath)}. Written by `lora submit`.\n");
        s.Append($"#SBATCH --job-name=lora-{name}\n");
        s.Append($"#SBATCH --array={array}\n");
        s.Append($"#SBATCH --output={Directive(Path.Combine(logDir, "%A_%a.log"))}\n");
        s.Append($"#SBATCH --chdir={Directive(lora.WorkingDirectory)}\n");
        s.Append("#SBATCH --ntasks=1\n");
        if (options.Partition is not null) s.Append($"#SBATCH --partition={options.Partition}\n");
        if (options.Account is not null) s.Append($"#SBATCH --account={options.Account}\n");
        if (options.GpusPerTask > 0)
            s.Append(options.GpuRequest == GpuRequest.Gres
                ? $"#SBATCH --gres=gpu:{options.GpusPerTask}\n"
                : $"#SBATCH --gpus-per-task={options.GpusPerTask}\n");
        if (options.CpusPerTask is int c) s.Append($"#SBATCH --cpus-per-task={c}\n");
        if (options.Time is not null) s.Append($"#SBATCH --time={options.Time}\n");
        // A failed upstream task leaves its dependants waiting forever unless Slurm cancels them.
        s.Append("#SBATCH --kill-on-invalid-dep=yes\n");
        foreach (var d in options.ExtraDirectives) s.Append($"#SBATCH {d}\n");
        s.Append("set -euo pipefail\n");
        s.Append(": \"${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: it is a job array}\"\n");
        s.Append($"runs={Shell.Quote(listPath)}\n");
        s.Append("hash=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" \"$runs\")\n");
        s.Append("if [ -z \"$hash\" ]; then\n");
        s.Append("  echo \"lora: array task $SLURM_ARRAY_TASK_ID has no line in $runs\" >&2\n");
        s.Append("  exit 2\n");
        s.Append("fi\n");
        s.Append("echo \"lora: array task $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID runs $hash on $(hostname)\"\n");
        s.Append("exec ").Append(lora.TaskCommandLine()).Append('\n');

        var list = string.Concat(runs.Select(r => r.Hash + "\n"));
        return new(name, level, runs, scriptPath, listPath, logDir, s.ToString(), list);
    }

    /// sbatch reads #SBATCH arguments itself (no shell): double quotes keep a path with spaces whole.
    static string Directive(string path)
    {
        if (path.Contains('"') || path.Contains('\n'))
            throw new ArgumentException($"the path '{path}' cannot be written into an #SBATCH line (it contains a quote or a newline): move the results folder or the working directory.");
        return path.Any(char.IsWhiteSpace) ? $"\"{path}\"" : path;
    }
}
