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

    /// <summary>The kept tables by experiment name (the file names are the experiments' file-safe
    /// names, so each record's experiment is matched through the same mapping); a kept file that does
    /// not read is an error naming it.</summary>
    public static IReadOnlyDictionary<string, IReadOnlyList<TableDecl>> Load(ResultsStore store, IEnumerable<string> experimentNames)
    {
        var found = new Dictionary<string, IReadOnlyList<TableDecl>>();
        foreach (var name in experimentNames.Distinct())
        {
            var file = FileOf(store, name);
            if (!File.Exists(file)) continue;
            var read = YamlSpec.tables(file, File.ReadAllText(file));
            if (read.IsError) throw new InvalidDataException(string.Join(Environment.NewLine, read.ErrorValue));
            found[name] = read.ResultValue.ToList();
        }
        return found;
    }
}
