using Lora.Core.Tuning;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// Reduced precision without autocast (TorchSharp has none). Under <see cref="Precision.BFloat16"/>
/// every leaf module of the model is cast to bfloat16 once, before training, except the adapters'
/// own modules (DoRA's A/B and magnitudes, AdaLoRA's P/E/Q, LoRA on convolutions, bottleneck
/// adapters): those are small, stay float32 and are cast per forward into the activations' dtype, as
/// autocast does. Plain LoRA's A and B on Linear layers are cast too (see CastLoraFactors).
///
/// Frozen weights then live in bf16 and no step casts them. Trainable parameters that are now bf16
/// (full fine-tuning, a trained head) compute in bf16, while <see cref="FlatAdamW"/> keeps a float32
/// master copy of them with float32 moments and writes the rounded result back after each step: the
/// recipe of mixed-precision training with master weights, without autocast's per-step casts of
/// every weight. <see cref="RestoreFloat32"/> puts the float32 masters back into the model when
/// training ends, so what is saved is the float32 result. Parameters held directly by non-leaf
/// modules (a ViT's cls token and position embedding) stay float32; their modules cast them.
public static class MixedPrecision
{
    /// Casts the model to <paramref name="precision"/> (nothing to do for float32): every leaf outside
    /// the adapters, and plain LoRA's A and B of Linear layers too (<see cref="CastLoraFactors"/>). Returns the values
    /// the trainable parameters had before the cast, by name (owned by the caller): give them to the
    /// optimiser (<see cref="TrainingStep"/>), so that its float32 masters start from the exact weights
    /// (as autocast's float32 weights do) rather than from their bf16 rounding.
    public static Dictionary<string, Tensor> Apply(nn.Module model, Precision precision)
    {
        var exact = new Dictionary<string, Tensor>();
        if (precision != Precision.BFloat16) return exact;
        foreach (var (name, p) in model.named_parameters())
            if (p.requires_grad && p.dtype == ScalarType.Float32) exact[name] = p.detach().clone().DetachFromDisposeScope();
        CastOutsideAdapters(model, ScalarType.BFloat16);
        CastLoraFactors(model, ScalarType.BFloat16);
        foreach (var (name, p) in model.named_parameters())   // keep those of the parameters that were cast
            if (p.dtype != ScalarType.BFloat16 && exact.Remove(name, out var kept)) kept.Dispose();
        return exact;
    }

    /// Plain LoRA's A and B on Linear layers are stored in <paramref name="dtype"/> too, trained through
    /// float32 masters like any bf16 weight: the forward used their bf16 rounding anyway (the cast per
    /// forward, as autocast), and the gradient it gave them was bf16 cast to float32, so training is
    /// the same, bit for bit with the masters starting from the exact weights, without four casts
    /// per layer and step. DoRA (whose weight norm is computed with A and B), AdaLoRA (whose allocator
    /// writes into E and scores |p·∇p|) and convolutions keep float32 factors.
    static void CastLoraFactors(nn.Module model, ScalarType dtype)
    {
        foreach (var layer in model.modules().OfType<TunerLayer>())
            foreach (var m in layer.ReducedPrecisionModules()) CastLeaf(m, dtype);
    }

    /// Casts every leaf module with floating-point parameters to <paramref name="dtype"/>, leaving the
    /// adapters of tuning layers (all but base_layer) and adapter modules as they are.
    public static void CastOutsideAdapters(nn.Module root, ScalarType dtype)
    {
        if (!root.children().Any()) { CastLeaf(root, dtype); return; }
        foreach (var (name, child) in root.named_children())
        {
            if (child is IAdapterModule) continue;
            if (root is TunerLayer && name != "base_layer") continue; // adapter slots
            CastOutsideAdapters(child, dtype);
        }
    }

    static void CastLeaf(nn.Module leaf, ScalarType dtype)
    {
        if (leaf.parameters(false).Any(p => p.is_floating_point() && p.dtype != dtype)) leaf.to(dtype);
    }

    /// After training under bf16 with master weights: casts the leaf modules that hold trained
    /// low-precision parameters back to float32 and copies the optimiser's float32 masters into
    /// them, so the model holds the exact training result (frozen leaves stay bf16). The optimiser's
    /// buffers no longer back those parameters afterwards: call it when training is over.
    public static void RestoreFloat32(nn.Module model, FlatAdamW optimizer)
    {
        var masters = optimizer.MasterWeights().ToDictionary(m => m.Name, m => m.Value);
        if (masters.Count == 0) return;
        using var _ = no_grad();
        foreach (var (prefix, leaf) in model.named_modules())
        {
            if (leaf.children().Any()) continue;
            string Full(string n) => prefix.Length == 0 ? n : prefix + "." + n;
            if (!leaf.named_parameters(false).Any(p => masters.ContainsKey(Full(p.name)))) continue;
            leaf.to(ScalarType.Float32);
            foreach (var (n, p) in leaf.named_parameters(false))
                if (masters.TryGetValue(Full(n), out var m)) p.copy_(m);
        }
        foreach (var m in masters.Values) m.Dispose();
    }
}
