using System.Diagnostics;

namespace Lora.Runner.Slurm;

/// What an external command returned. ExitCode 127 with Found = false: the program is not installed.
public sealed record CommandResult(int ExitCode, string Stdout, string Stderr, bool Found = true);

/// Runs external programs (sbatch, squeue, sacct). Tests substitute a fake that records the calls.
public interface ICommandRunner
{
    CommandResult Run(string program, IReadOnlyList<string> args);
}

/// Runs the real programs from PATH and waits for them.
public sealed class ProcessCommandRunner : ICommandRunner
{
    public CommandResult Run(string program, IReadOnlyList<string> args)
    {
        var info = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) info.ArgumentList.Add(a);
        Process process;
        try
        {
            process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {program}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return new(127, "", $"{program}: {e.Message}", Found: false);
        }
        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return new(process.ExitCode, stdout, stderr.Result);
        }
    }
}
