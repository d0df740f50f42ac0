using TorchSharp;

namespace Lora.Core.Models;

/// What a model is for.
public enum ModelTask { Classification, Segmentation }

/// What a model expects and what it is, as timm's pretrained_cfg: the runner, `predict` and the
/// tables read it instead of switching on model types.
/// <param name="InChans">input channels</param>
/// <param name="InputSize">the fixed input size (ViT's img_size), or null when any size works</param>
/// <param name="Mean">per-channel normalisation mean (this project's: 0.5, images in [-1, 1])</param>
/// <param name="Classifier">the head's module path (timm's pretrained_cfg['classifier'])</param>
/// <param name="Backbone">the encoder's family in tables ("ViT", "TinyViT", "UNet"), or null to label it by its zoo name</param>
public sealed record ModelCard(long InChans, long? InputSize, IReadOnlyList<float> Mean, IReadOnlyList<float> Std, string Classifier, ModelTask Task, string? Backbone)
{
    /// This project's normalisation: 0.5 ± 0.5 per channel (models here are trained from its own data).
    public static ModelCard Of(long inChans, long? inputSize, string classifier, ModelTask task, string? backbone = null) =>
        new(inChans, inputSize, Enumerable.Repeat(0.5f, (int)inChans).ToArray(), Enumerable.Repeat(0.5f, (int)inChans).ToArray(), classifier, task, backbone);
}

/// A model that carries its card (every zoo architecture).
public interface IHasModelCard : IHasClassifier
{
    ModelCard Card { get; }

    string IHasClassifier.Classifier => Card.Classifier;
}
