using System.Text.Json;
using System.Text.Json.Nodes;
using Lora.Core.IO;

namespace Lora.Runner;

/// <summary>
/// A finished run's model card (results/&lt;hash&gt;/model-card.json, committed beside metrics.json):
/// everything needed to use the result without its spec — the model and its constructor arguments,
/// the input it was trained on (channels, size, mean/std), the class names, the task and the
/// method's configuration, and where its weights are. <see cref="Write"/> and <see cref="Read"/> are
/// its one serialiser; every command that consumes a run reads it through <see cref="RunLocation"/>.
/// </summary>
public sealed class RunCard
{
    public const string FileName = "model-card.json";
    /// The artifacts holding a full model's weights (pretraining, full and head-only runs).
    public const string ModelWeights = "model";
    /// The artifacts holding a PEFT adapter folder over base weights.
    public const string AdapterWeights = "adapter";

    public string Hash { get; init; } = "";
    public string Id { get; init; } = "";
    /// "zoo" or "onnx".
    public string Source { get; init; } = "zoo";
    /// The zoo name, or the ONNX file's path.
    public string Model { get; init; } = "";
    /// The constructor arguments the model was built with (num_classes and in_chans included).
    public JsonObject Options { get; init; } = new();
    public long InChans { get; init; }
    /// The image size the model was trained on (its fixed size, or the data's after resizing).
    public int InputSize { get; init; }
    /// The normalisation of pixels in [0, 1] the training used, one value per channel.
    public float[] Mean { get; init; } = [];
    public float[] Std { get; init; } = [];
    /// Class names in label order (the class subset, relabelled 0..n-1).
    public string[] Classes { get; init; } = [];
    /// "classification" or "segmentation".
    public string Task { get; init; } = "classification";
    /// The head's module path.
    public string Classifier { get; init; } = "";
    public string? Backbone { get; init; }
    /// The method's name, rank (0 when it has none) and configuration as the spec resolved it.
    public string Method { get; init; } = "full";
    public int Rank { get; init; }
    public JsonObject MethodConfig { get; init; } = new();
    /// Whether the adapter can be merged into the weights (a bottleneck Adapter cannot).
    public bool Mergeable { get; init; } = true;
    /// <see cref="ModelWeights"/> or <see cref="AdapterWeights"/>: what the run's artifacts hold.
    public string Weights { get; init; } = ModelWeights;
    /// The run whose model.safetensors an adapter run starts from, or null.
    public string? BaseRun { get; init; }
    /// The weights file an adapter run starts from, or null.
    public string? BaseWeights { get; init; }
    /// The seed the model was built under (a zoo model tuned from scratch is rebuilt from it).
    public int Seed { get; init; }

    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.Never,
    };

    /// Writes the card atomically (a killed writer leaves the old file or none).
    public static void Write(string path, RunCard card) =>
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(card, Json) + "\n");

    /// Reads a card; a missing or unreadable one says what to do.
    public static RunCard Read(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"{path} does not exist: the run has no model card (made before cards existed, or not a run's results folder); `lora run SPEC --only HASH --force` writes one", path);
        try
        {
            return JsonSerializer.Deserialize<RunCard>(InputFile.ReadAllText(path, InputFile.MaxTextBytes, "model card"), Json)
                ?? throw new InvalidDataException($"{path}: empty model card");
        }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a model card ({e.Message})", e); }
    }
}
