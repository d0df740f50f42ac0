namespace Lora.Core.Models;

/// A model that carries its own input preprocessing (ML.NET's ResNet-18: ×255, RGB → BGR, minus
/// its mean image): data loaders give it pixels in [0, 1] without mean/std normalisation.
public interface IOwnsPreprocessing
{
}
