using System.Text.Json.Nodes;
using Lora.CommandLine;
using Lora.Core.Tuning;

namespace Lora.Runner;

/// `lora adapters list DIR | delete DIR NAME | rename DIR NAME NEW`: the adapters of a PEFT folder
/// laid out as PEFT's save_pretrained writes several: "default" at the folder's root, every other
/// adapter in the subfolder of its name (each a PEFT adapter folder that `--adapter DIR/NAME`,
/// `combine` and PeftModel.from_pretrained(..., subfolder=NAME) load). Only files change: nothing is
/// loaded into a model.
public static class AdaptersCommand
{
    public const string Default = "default";

    public static int Run(AdaptersOptions o, TextWriter stdout) => o.Action switch
    {
        "list" => List(o.Dir, stdout),
        "delete" => Delete(o.Dir, o.Name, stdout),
        "rename" => Rename(o.Dir, o.Name, o.NewName, stdout),
        _ => throw new ArgumentException($"unknown action '{o.Action}': list, delete or rename"),
    };

    /// The adapters of the folder: (name, its folder), the root's first.
    public static IReadOnlyList<(string Name, string Folder)> Find(string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"adapter folder '{dir}' does not exist");
        var found = new List<(string, string)>();
        if (File.Exists(Path.Combine(dir, AdapterCheckpoint.ConfigFile))) found.Add((Default, dir));
        foreach (var sub in Directory.GetDirectories(dir).OrderBy(d => d, StringComparer.Ordinal))
            if (File.Exists(Path.Combine(sub, AdapterCheckpoint.ConfigFile)) && Path.GetFileName(sub) != Default)
                found.Add((Path.GetFileName(sub), sub));
        return found;
    }

    static int List(string dir, TextWriter stdout)
    {
        var found = Find(dir);
        if (found.Count == 0) throw new InvalidDataException($"'{dir}' holds no adapter (no {AdapterCheckpoint.ConfigFile} at its root or in a subfolder)");
        foreach (var (name, folder) in found) stdout.WriteLine($"{name}  {Describe(folder)}  {folder}");
        return 0;
    }

    /// "LORA r=4, 2 target module(s)" from the folder's config (what it says, unchecked).
    static string Describe(string folder)
    {
        try
        {
            var config = JsonNode.Parse(Lora.Core.IO.InputFile.ReadAllText(Path.Combine(folder, AdapterCheckpoint.ConfigFile), Lora.Core.IO.InputFile.MaxTextBytes, "adapter config"));
            var type = config?["peft_type"]?.ToString() ?? "?";
            var r = config?["r"] is JsonValue rv ? $" r={rv}" : "";
            var targets = config?["target_modules"] is JsonArray t ? $", {t.Count} target module(s)" : config?["target_modules"] is JsonValue tv ? $", target_modules {tv}" : "";
            return type + r + targets;
        }
        catch (System.Text.Json.JsonException e) { return $"(unreadable config: {e.Message})"; }
    }

    static (string Name, string Folder) Named(string dir, string name)
    {
        var found = Find(dir);
        var hit = found.FirstOrDefault(f => f.Name == name);
        if (hit.Folder is null)
            throw new ArgumentException($"'{dir}' has no adapter '{name}'; it has: {(found.Count == 0 ? "none" : string.Join(", ", found.Select(f => f.Name)))}");
        return hit;
    }

    static int Delete(string dir, string name, TextWriter stdout)
    {
        var (_, folder) = Named(dir, name);
        // the root adapter is two files beside the others' folders; another is its whole subfolder
        if (name == Default)
            foreach (var f in new[] { AdapterCheckpoint.ConfigFile, AdapterCheckpoint.WeightsFile })
                File.Delete(Path.Combine(folder, f));
        else Directory.Delete(folder, recursive: true);
        stdout.WriteLine($"deleted adapter '{name}' from {dir}");
        return 0;
    }

    static int Rename(string dir, string name, string newName, TextWriter stdout)
    {
        if (string.IsNullOrWhiteSpace(newName) || newName.IndexOfAny(['/', '\\']) >= 0 || newName is "." or ".." || newName.Any(char.IsControl))
            throw new ArgumentException($"'{newName}' is not a usable adapter name (a folder name: no / or \\)");
        var (_, folder) = Named(dir, name);
        if (Find(dir).Any(f => f.Name == newName)) throw new ArgumentException($"'{dir}' already has an adapter '{newName}': delete or rename it first");
        var target = newName == Default ? dir : Path.Combine(dir, newName);
        if (newName != Default && Directory.Exists(target)) throw new IOException($"'{target}' exists (not an adapter): choose another name");
        if (name == Default || newName == Default)
        {
            // between the root and a subfolder: the adapter's two files move
            Directory.CreateDirectory(target);
            foreach (var f in new[] { AdapterCheckpoint.ConfigFile, AdapterCheckpoint.WeightsFile })
                if (File.Exists(Path.Combine(folder, f))) File.Move(Path.Combine(folder, f), Path.Combine(target, f));
            if (name != Default && !Directory.EnumerateFileSystemEntries(folder).Any()) Directory.Delete(folder);
        }
        else Directory.Move(folder, target);
        stdout.WriteLine($"renamed adapter '{name}' to '{newName}' in {dir}");
        return 0;
    }
}
