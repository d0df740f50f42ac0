using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// Reduced precision without autocast (TorchSharp has none): under <see cref="Precision.BFloat16"/>
/// every leaf module whose parameters are all frozen is cast to bfloat16 once, before training, so
/// the frozen weights live in bf16 and no step casts them again; trainable parameters (and so the
/// optimiser state) stay float32. Tuning layers compute their adapter path in the dtype of the
/// activations they receive (casting their small fp32 weights, as autocast does) and return the
/// frozen base's dtype; a module trained fully (modules_to_save, a classifier head) gets its input
/// cast to its own dtype.
public static class MixedPrecision
{
    public static void Apply(nn.Module model, Precision precision)
    {
        if (precision == Precision.BFloat16) CastFrozenLeaves(model, ScalarType.BFloat16);
    }

    /// Casts leaf modules whose parameters are all frozen to the given dtype.
    public static void CastFrozenLeaves(nn.Module root, ScalarType dtype)
    {
        foreach (var m in root.modules().ToArray())
        {
            if (m.children().Any()) continue;
            var ps = m.parameters(false).ToArray();
            if (ps.Length > 0 && ps.All(p => !p.requires_grad && p.is_floating_point())) m.to(dtype);
        }
    }
}
