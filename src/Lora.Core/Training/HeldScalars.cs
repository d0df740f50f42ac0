using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// Native object lifetimes (docs/reliability.md). TorchSharp frees a Tensor or a Scalar in its
/// finalizer, and once a method has read an object's native handle the JIT may treat the object as
/// dead: a garbage collection during the native call can then free it while libtorch still reads
/// it ("Unknown scalar type", a SIGSEGV, or a silently wrong value). So no native call may depend
/// on the GC's timing:
/// - every intermediate tensor is created inside a dispose scope (the scope holds it), or held by a
///   variable that outlives the call;
/// - no Scalar is a temporary. A number in an op (`x * 0.5`) becomes a fresh, unreferenced Scalar,
///   and so does `alpha = 1` inside TorchSharp's Tensor.add(Tensor), add(Scalar), add_ and `+`.
///   Use a `using` Scalar, or these methods, which pass Scalars held for the process's life.
public static class HeldScalars
{
    public static readonly Scalar One = 1.ToScalar();
    public static readonly Scalar Zero = 0.ToScalar();

    /// a + b (what `a + b` computes, without its temporary alpha).
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);
    public static Tensor Plus(this Tensor a, Scalar b) => a.add(b, One);
    public static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, One);
    public static Tensor PlusInPlace(this Tensor a, Scalar b) => a.add_(b, One);
}
