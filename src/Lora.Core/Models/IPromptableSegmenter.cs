using static TorchSharp.torch;

namespace Lora.Core.Models;

/// A SAM-style segmenter: images plus optional prompts in, mask logits out.
/// images [N,C,H,W]; boxes [N,4] (x0,y0,x1,y1 in input pixels) or null; points [N,P,2] with
/// pointLabels [N,P] (1 foreground, 0 background) or null. Returns mask logits [N,1,H,W].
public interface IPromptableSegmenter
{
    Tensor Segment(Tensor images, Tensor? boxes, Tensor? points, Tensor? pointLabels);
}
