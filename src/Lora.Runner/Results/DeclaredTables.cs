using Lora.Core.IO;
using Lora.Dsl;
using Microsoft.FSharp.Collections;

namespace Lora.Runner;

/// <summary>
/// The tables each experiment declares, kept beside its results (results/tables/&lt;experiment&gt;.yaml)
/// when `lora run` runs its spec, so `lora tables` without the spec still lays them out as declared
/// rather than in the default layout. The spec in hand is the truth: a spec that declares no tables
/// removes the kept file. Tables never enter a hash, so this is the only place they are stored.
/// </summary>
public static class DeclaredTables
{
    const string Folder = "tables";

    static string FileOf(ResultsStore store, string experiment) =>
        SafePath.Inside(store.Root, Path.Combine(store.Root, Folder, SafeName.ForFile(experiment) + ".yaml"));

    /// <summary>Keeps (or removes) each experiment's declared tables.</summary>
    public static void Save(ResultsStore store, IEnumerable<Experiment> experiments)
    {
        foreach (var e in experiments.GroupBy(e => e.Name).Select(g => g.First()))
        {
            var file = FileOf(store, e.Name);
            if (e.Tables.IsEmpty) { if (File.Exists(file)) File.Delete(file); continue; }
            var text = YamlSpec.writeTableDecls(e.Tables);
            if (File.Exists(file) && File.ReadAllText(file) == text) continue;
            Directory.CreateDirectory(Path.GetDirectoryName(file)!);
            AtomicFile.WriteAllText(file, text);
        }
    }

    /// <summary>Every kept declaration, by the experiment's file-safe name (the file's name, which is
    /// how tables are named too); a kept file that does not read is an error naming it.</summary>
    public static Dictionary<string, IReadOnlyList<TableDecl>> Load(ResultsStore store)
    {
        var found = new Dictionary<string, IReadOnlyList<TableDecl>>();
        var folder = Path.Combine(store.Root, Folder);
        if (!Directory.Exists(folder)) return found;
        foreach (var file in Directory.GetFiles(folder, "*.yaml").OrderBy(f => f, StringComparer.Ordinal))
        {
            var read = YamlSpec.tables(file, File.ReadAllText(file));
            if (read.IsError) throw new InvalidDataException(string.Join(Environment.NewLine, read.ErrorValue));
            found[Path.GetFileNameWithoutExtension(file)] = read.ResultValue.ToList();
        }
        return found;
    }
}
