using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lora.Core.IO;
using Lora.Core.Training;
using Lora.Core.Tuning;
using Lora.CommandLine;
using Lora.Dsl;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora predict --run HASH|DIR IMAGE...` or `lora predict --model NAME --weights base.safetensors
/// [--adapter DIR] [--labels labels.txt] [--top-k K] [--json] IMAGE...`: the ModelScope seed's
/// classification pipeline. Images are resized to the model's input size and scaled to [0, 1], then
/// normalised with --mean/--std (a run's card gives them, its input size and its class names); an
/// adapter is merged when its method can merge and applied as it is otherwise.
public static class PredictCommand
{
    public static int Run(PredictOptions o, TextWriter stdout, TextWriter stderr)
    {
        if (ModelSource.OneOf(o.Model, o.Run) is { } which) return Bad(stderr, which);
        if (o.Run is null && o.Weights is null) return Bad(stderr, "--weights is required: the model's timm-format safetensors file (or give --run HASH)");
        if (o.Images.IsEmpty) return Bad(stderr, "no images given: lora predict --run HASH IMAGE... (or --model NAME --weights W.safetensors IMAGE...)");
        if (o.TopK < 1) return Bad(stderr, $"--top-k must be at least 1, got {o.TopK}");
        float[]? mean, std;
        try { (mean, std) = (Stats(o.Mean, "--mean", Lora.Core.Data.Transforms.ImageNetMean), Stats(o.Std, "--std", Lora.Core.Data.Transforms.ImageNetStd)); }
        catch (FormatException e) { return Bad(stderr, e.Message); }
        IReadOnlyList<string>? labels = o.Labels is null ? null : Predictor.ReadLabels(o.Labels);
        nn.Module<Tensor, Tensor> model;
        int size, channels;
        string name;
        if (o.Run is not null)
        {
            // the run's card says it all; explicit flags still win
            var run = RunLocation.Resolve(o.Run, o.Results);
            var card = run.Card;
            if (card.Task != "classification") return Bad(stderr, $"run {card.Id} is a {card.Task} run; predict takes a classifier");
            model = RunModel.Load(run, new RunOverrides(o.ModelConfig, o.Weights, o.Adapters), mustMerge: false);
            (size, channels, name) = (card.InputSize, (int)card.InChans, card.Id);
            mean ??= card.Mean.Length > 0 ? card.Mean : null;
            std ??= card.Std.Length > 0 ? card.Std : null;
            labels ??= card.Classes.Length > 0 ? card.Classes : null;
        }
        else
        {
            var args = ModelSource.Args(o.ModelConfig);
            model = ModelSource.Create(o.Model, args);
            if (Lora.Core.Models.Zoo.Card(model).Task != Lora.Core.Models.ModelTask.Classification)
                return Bad(stderr, $"{o.Model} ({model.GetType().Name}) is not an image classifier; predict takes a classifier of the zoo (ViT, ConvNeXt, TinyViT)");
            StateDict.Load(model, o.Weights, strict: true);
            // an adapter that cannot merge (a bottleneck Adapter) is applied as it is: same predictions
            model = ModelSource.MergeAdapters(model, o.Adapters);
            (size, channels) = ModelSource.InputShape(model, args);
            name = o.Model;
        }
        using var _model = model;
        var images = o.Images.ToList();
        if (mean is not null && mean.Length != channels || std is not null && std.Length != channels)
            return Bad(stderr, $"--mean and --std need one value per channel ({channels}) of {name}");
        using var x = Predictor.LoadImages(images, size, channels, mean, std);
        var top = Predictor.TopK(model, x, o.TopK, labels);
        if (o.Json)
        {
            var array = new JsonArray(images.Select((img, i) => (JsonNode?)new JsonObject
            {
                ["image"] = img,
                ["predictions"] = new JsonArray(top[i].Select(p => (JsonNode?)new JsonObject
                {
                    ["label"] = p.Label,
                    ["index"] = p.Index,
                    ["score"] = Math.Round(p.Probability, 6),
                }).ToArray()),
            }).ToArray());
            stdout.WriteLine(array.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        for (int i = 0; i < images.Count; i++)
        {
            stdout.WriteLine(images[i]);
            var width = top[i].Max(p => p.Label.Length);
            foreach (var p in top[i])
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {p.Label.PadRight(width)}  {p.Probability:0.0000}"));
        }
        return 0;
    }

    /// "0.5,0.5,0.5" or "imagenet" → the values; null → null.
    static float[]? Stats(string? text, string option, float[] imagenet)
    {
        if (text is null) return null;
        if (text.Equals("imagenet", StringComparison.OrdinalIgnoreCase)) return imagenet;
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var values = new float[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!float.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]))
                throw new FormatException($"{option} must be comma-separated numbers (e.g. 0.5,0.5,0.5) or 'imagenet', got '{text}'");
        if (option == "--std" && values.Any(v => v <= 0)) throw new FormatException($"--std values must be positive, got '{text}'");
        return values;
    }

    static int Bad(TextWriter stderr, string message)
    {
        stderr.WriteLine($"lora predict: {message}");
        return 2;
    }
}
