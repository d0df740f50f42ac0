using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lora.CommandLine;
using Lora.Core.IO;
using Lora.Core.Training;
using Lora.Dsl;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora eval --run HASH|DIR --dataset SOURCE|FILE.yaml [--path P] [--classes a,b] [--limit N] [--json] [--out F]`:
/// a finished run, rebuilt from its model card, evaluated on a data set named as a spec names one
/// (the validation split: a source's test set, a folder's held-out part), its images converted as
/// in training (the card's size, channels, mean/std). Prints the metrics; --out saves them as JSON.
public static class EvalCommand
{
    public static int Run(EvalOptions o, TextWriter stdout, TextWriter stderr)
    {
        var view = DatasetOf(o, out var problems);
        if (view is null)
        {
            foreach (var p in problems) stderr.WriteLine($"lora eval: {p}");
            return 2;
        }
        var run = RunLocation.Resolve(o.Run, o.Results);
        var card = run.Card;
        var task = card.Task == "segmentation" ? Lora.Dsl.Task.Segmentation : Lora.Dsl.Task.Classification;
        var invalid = Validation.dataset(Microsoft.FSharp.Core.FuncConvert.FromFunc<string, bool>(Validation.pathExists), "dataset", task, view).ToList();
        if (invalid.Count > 0)
        {
            foreach (var e in invalid) stderr.WriteLine($"lora eval: {e.Field}: {e.Message}");
            return 2;
        }
        var data = RunData.Load(view, task, null, (card.InputSize, (int)card.InChans));
        int expected = task.IsSegmentation ? (card.Classes.Length == 2 ? 1 : card.Classes.Length) : card.Classes.Length;
        if (card.Classes.Length > 0 && data.OutputClasses != expected)
        {
            stderr.WriteLine($"lora eval: run {card.Id} predicts {card.Classes.Length} classes ({string.Join(", ", card.Classes.Take(10))}) but {Grid.datasetLabel(view)} has {data.OutputClasses}: choose as many with --classes (or classes: in the YAML file)");
            return 2;
        }
        using var model = RunModel.Load(run, new RunOverrides(), mustMerge: false);
        var device = o.Device ?? "cpu";
        model.to(device);
        var transforms = TrainingExecutor.InputTransforms(model, data, card.InputSize, line => stderr.WriteLine(line));
        var m = data.IsSegmentation
            ? Evaluator.Segmentation(model, data.SegValidation!, transforms: transforms, device: device)
            : Evaluator.Classification(model, data.Validation!, transforms: transforms, device: device);
        var metrics = new JsonObject { ["loss"] = m.Loss };
        if (m.Top1 is double top1) metrics["accuracy"] = top1;
        if (m.Top5 is double top5) metrics["top5"] = top5;
        if (m.Dice is double dice) metrics["dice"] = dice;
        if (m.MIoU is double miou) metrics["miou"] = miou;
        var json = new JsonObject
        {
            ["run"] = run.Hash,
            ["id"] = card.Id,
            ["dataset"] = Grid.datasetLabel(view),
            ["count"] = m.Count,
            ["metrics"] = metrics,
        };
        var text = json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        if (o.Out is not null) AtomicFile.WriteAllText(o.Out, text + "\n");
        if (o.Json) stdout.WriteLine(text);
        else
        {
            stdout.WriteLine($"{card.Id} ({run.Hash}) on {Grid.datasetLabel(view)}: {m.Count} images");
            foreach (var kv in metrics)
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {kv.Key,-8} {kv.Value!.GetValue<double>():0.0000}"));
        }
        return 0;
    }

    /// The data set: a spec's dataset: entry from a YAML file (its paths relative to that file), or
    /// one built from the flags (paths relative to the working directory).
    static DatasetView? DatasetOf(EvalOptions o, out List<string> problems)
    {
        problems = [];
        string text, file, dir;
        if (o.Dataset.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || o.Dataset.EndsWith(".yml", StringComparison.OrdinalIgnoreCase))
        {
            if (!File.Exists(o.Dataset)) { problems.Add($"--dataset: no file '{o.Dataset}'"); return null; }
            if (o.Path is not null || !o.Classes.IsEmpty || o.Limit is not null)
                problems.Add("--path, --classes and --limit go with a source name; a YAML file says them itself");
            text = InputFile.ReadAllText(o.Dataset, InputFile.MaxTextBytes, "data set");
            file = o.Dataset;
            dir = Path.GetDirectoryName(Path.GetFullPath(o.Dataset))!;
        }
        else
        {
            static string Q(string s) => "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
            var lines = new List<string> { "source: " + Q(o.Dataset.Replace('-', '_').ToLowerInvariant()) };
            if (o.Path is not null) lines.Add("path: " + Q(o.Path));
            if (!o.Classes.IsEmpty) lines.Add("classes: [" + string.Join(", ", o.Classes) + "]");
            if (o.Limit is int n) lines.Add($"limit_val: {n}");
            lines.Add($"seed: {o.Seed}");
            text = string.Join("\n", lines) + "\n";
            file = "--dataset";
            dir = Directory.GetCurrentDirectory();
        }
        if (problems.Count > 0) return null;
        var parsed = YamlSpec.datasetView(file, text);
        if (parsed.IsError) { problems.AddRange(parsed.ErrorValue); return null; }
        return SpecPaths.dataset(dir, parsed.ResultValue);
    }
}
