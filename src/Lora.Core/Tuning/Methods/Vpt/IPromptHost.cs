using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// A ViT-style encoder that can take VPT prompt tokens: after the class token and position
/// embedding, prompts[0] (tokens, dim) are inserted after the class token; with deep prompts, block
/// i > 0 gets prompts[i] in place of the previous block's prompt outputs. Passing null removes them.
public interface IPromptHost
{
    /// The width of the token stream and the number of blocks.
    (long Dim, int Depth, long PatchArea) PromptShape { get; }

    void SetPrompts(VisualPrompts? prompts);
}

/// VPT's learned prompt tokens: `prompt_embeddings` (1 or depth, tokens, dim), initialised as the
/// paper (uniform ±√(6 / (3·patch² + dim)), Xavier over the patch projection's fan-in and the width).
public sealed class VisualPrompts : nn.Module, IAdapterModule
{
#pragma warning disable IDE1006 // state-dict keys
    public Parameter prompt_embeddings;
#pragma warning restore IDE1006

    public VisualPrompts(int layers, long tokens, long dim, long patchArea, ScalarType dtype, Device device) : base(nameof(VisualPrompts))
    {
        var v = Math.Sqrt(6.0 / (3 * patchArea + dim));
        using (torch.no_grad())
            prompt_embeddings = new Parameter(torch.empty(layers, tokens, dim, dtype: dtype, device: device).uniform_(-v, v));
        RegisterComponents();
    }

    public string Group => "VPT";

    public bool Deep => prompt_embeddings.shape[0] > 1;

    public long Tokens => prompt_embeddings.shape[1];

    /// The prompts of block i (the first layer's for shallow VPT), expanded over the batch.
    public Tensor At(int block, long batch, ScalarType dtype)
    {
        var p = prompt_embeddings[block].unsqueeze(0).expand(batch, -1, -1);
        return p.dtype == dtype ? p : p.to(dtype);
    }
}
