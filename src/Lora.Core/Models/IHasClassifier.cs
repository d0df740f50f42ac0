namespace Lora.Core.Models;

/// A model that names its task head, as timm's `pretrained_cfg['classifier']` does: the module that
/// is new when the class count changes (a checkpoint's weights of another shape are not loaded into
/// it), that the `head` method trains, and that the spec word `head` in modules_to_save stands for.
public interface IHasClassifier
{
    /// The head's dotted module path: `head` (ViT; ConvNeXt and TinyViT, whose head is pooling,
    /// norm and fc: timm names only `head.fc`, the whole head trains here), `outc` (UNet),
    /// `mask_decoder` (SAM).
    string Classifier { get; }
}
