using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// q/v-only LoRA on a fused qkv Linear, as loralib's MergedLinear(enable_lora=[True, False, True]):
/// the out features are P equal parts (q, k, v: P = 3); each of the k enabled parts i has its own
/// factors A_i (r × in) and B_i (out/P × r), and ΔW is B_i·A_i·s on part i's rows, zero on the
/// others. Stored as loralib stores them: lora_A = [A_1; …; A_k] (k·r × in) and
/// lora_B = [B_1; …; B_k] (k·out/P × r). Trainable parameters: k·r·(in + out/P).
public static class FusedQkv
{
    /// The parts of a fused qkv Linear, in the order of its out features.
    public static readonly IReadOnlyList<string> PartNames = ["q", "k", "v"];

    /// enable_lora from part names ("q", "v" → [true, false, true]).
    public static bool[] Parts(IReadOnlyCollection<string> names) => PartNames.Select(names.Contains).ToArray();

    /// The stored B as the out × k·r matrix it acts as: B_i in part i's rows and A_i's columns, zero
    /// elsewhere; then ΔW = B_full·A·s and the output is plain LoRA's h·B_fullᵀ·s with h = x·Aᵀ (one
    /// matmul each; loralib's grouped conv1d computes the same).
    public static Tensor FullB(Tensor b, bool[] parts, long rank)
    {
        using var scope = torch.NewDisposeScope();
        int k = parts.Count(p => p);
        long part = b.shape[0] / k;
        var blocks = b.split(part, 0);
        var zero = b.new_zeros(part, rank);
        var j = 0;
        var rows = parts.Select(p =>
        {
            if (!p) return b.new_zeros(part, k * rank);
            var i = j++;
            return torch.cat(Enumerable.Range(0, k).Select(c => c == i ? blocks[i] : zero).ToList(), 1);
        }).ToList();
        return torch.cat(rows, 0).MoveToOuterDisposeScope();
    }
}
