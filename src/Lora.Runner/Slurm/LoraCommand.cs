using System.Reflection;

namespace Lora.Runner.Slurm;

/// The command line that starts this program on a compute node: the installed `lora` executable,
/// or `dotnet path/to/lora.dll` when it runs through the dotnet host. Both paths must be reachable
/// from the compute nodes (a shared filesystem), like the spec and the results folder.
public sealed record LoraCommand(IReadOnlyList<string> Prefix)
{
    /// How the current process was started, as absolute paths.
    public static LoraCommand FromCurrentProcess()
    {
        var process = Environment.ProcessPath
            ?? throw new InvalidOperationException("cannot tell which executable runs lora (Environment.ProcessPath is null); pass the lora command explicitly.");
        if (Path.GetFileNameWithoutExtension(process).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            var entry = Assembly.GetEntryAssembly()?.Location;
            if (string.IsNullOrEmpty(entry))
                throw new InvalidOperationException("lora runs through dotnet but its assembly path is unknown (single-file bundle?); pass the lora command explicitly.");
            return new([process, Path.GetFullPath(entry)]);
        }
        return new([process]);
    }

    /// The environment variable that replaces the command on the compute nodes, e.g. where lora lives
    /// at another path there or runs in a container: `apptainer exec /shared/lora.sif lora`.
    public const string OverrideVariable = "LORA_SLURM_COMMAND";

    /// $LORA_SLURM_COMMAND (words separated by spaces) when set, else how this process was started.
    public static LoraCommand FromEnvironmentOrProcess()
    {
        var words = Environment.GetEnvironmentVariable(OverrideVariable)?
            .Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        return words is { Length: > 0 } ? new(words) : FromCurrentProcess();
    }

    /// This command followed by arguments, quoted for bash.
    public string ToShell(IEnumerable<string> args) => string.Join(' ', Prefix.Concat(args).Select(Shell.Quote));
}

/// POSIX shell quoting: everything inside single quotes is literal.
public static class Shell
{
    public static string Quote(string word) =>
        word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || "/._-=:,+@%".Contains(c))
            ? word
            : "'" + word.Replace("'", "'\\''") + "'";
}
