using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lora.Core.IO;
using Lora.Core.Training;
using Lora.Core.Tuning;
using Lora.CommandLine;
using Lora.Dsl;

namespace Lora.Runner;

/// `lora predict --model NAME --weights base.safetensors [--adapter DIR] [--labels labels.txt]
/// [--top-k K] [--json] IMAGE...`: the ModelScope seed's classification pipeline. Images are
/// resized to the model's input size and scaled to [0, 1], then normalised with --mean/--std when
/// given (use what the model was trained with); the adapter, when given, is merged before predicting.
public static class PredictCommand
{
    public static int Run(PredictOptions o, TextWriter stdout, TextWriter stderr)
    {
        if (o.Weights is null) return Bad(stderr, "--weights is required: the model's timm-format safetensors file");
        if (o.Images.IsEmpty) return Bad(stderr, "no images given: lora predict --model NAME --weights W.safetensors IMAGE...");
        if (o.TopK < 1) return Bad(stderr, $"--top-k must be at least 1, got {o.TopK}");
        float[]? mean, std;
        try { (mean, std) = (Stats(o.Mean, "--mean", Lora.Core.Data.Transforms.ImageNetMean), Stats(o.Std, "--std", Lora.Core.Data.Transforms.ImageNetStd)); }
        catch (FormatException e) { return Bad(stderr, e.Message); }
        var args = ModelSource.Args(o.ModelConfig);
        var labels = o.Labels is null ? null : Predictor.ReadLabels(o.Labels);
        using var model = ModelSource.Create(o.Model, args);
        if (Lora.Core.Models.Zoo.Card(model).Task != Lora.Core.Models.ModelTask.Classification)
            return Bad(stderr, $"{o.Model} ({model.GetType().Name}) is not an image classifier; predict takes a classifier of the zoo (ViT, ConvNeXt, TinyViT)");
        StateDict.Load(model, o.Weights, strict: true);
        var predictor = ModelSource.MergeAdapters(model, o.Adapters);
        var (size, channels) = ModelSource.InputShape(model, args);
        var images = o.Images.ToList();
        if (mean is not null && mean.Length != channels || std is not null && std.Length != channels)
            return Bad(stderr, $"--mean and --std need one value per channel ({channels}) of {o.Model}");
        using var x = Predictor.LoadImages(images, size, channels, mean, std);
        var top = Predictor.TopK(predictor, x, o.TopK, labels);
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
