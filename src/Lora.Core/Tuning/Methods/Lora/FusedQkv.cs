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

    /// ΔW (out × in): each enabled part's B_i·A_i·s, zero rows for the others.
    public static Tensor Delta(Tensor a, Tensor b, bool[] parts, double scaling)
    {
        using var scope = torch.NewDisposeScope();
        int k = parts.Count(p => p);
        long r = a.shape[0] / k, inF = a.shape[1], part = b.shape[0] / k;
        var blocks = b.reshape(k, part, r).bmm(a.reshape(k, r, inF));   // (k, out/P, in)
        using var s = scaling.ToScalar();
        return Place(blocks.unbind(0), parts, blocks.new_zeros(part, inF), 0).mul(s).MoveToOuterDisposeScope();
    }

    /// The adapter's output (…, out) for h = x·Aᵀ (…, k·r): part i's h_i·B_iᵀ·s, zero for the others.
    public static Tensor Output(Tensor h, Tensor b, bool[] parts, double scaling)
    {
        using var scope = torch.NewDisposeScope();
        int k = parts.Count(p => p);
        long r = h.shape[^1] / k, part = b.shape[0] / k;
        var hs = h.split(r, -1);
        var bs = b.split(part, 0);
        var outs = Enumerable.Range(0, k).Select(i => hs[i].matmul(bs[i].t())).ToArray();
        var lead = h.shape[..^1].Append(part).ToArray();
        using var s = scaling.ToScalar();
        return Place(outs, parts, h.new_zeros(lead), -1).mul(s).MoveToOuterDisposeScope();
    }

    /// The enabled parts' blocks in their places along <paramref name="axis"/>, zero blocks between.
    static Tensor Place(IReadOnlyList<Tensor> enabled, bool[] parts, Tensor zero, long axis)
    {
        var j = 0;
        return torch.cat(parts.Select(p => p ? enabled[j++] : zero).ToList(), axis);
    }
}
