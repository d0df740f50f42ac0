using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// PEFT's pissa_init and olora_init (src/peft/tuners/lora/layer.py): A and B start from the base
/// weight W (out × in) and W is replaced in place by the residual W − s·B·A, so the layer's output is
/// unchanged at step 0 while the adapter holds W's principal (PiSSA) or leading orthogonal (OLoRA)
/// directions. Computed in float32 as PEFT (float64 for a float64 base); the residual subtracts the
/// factors as stored, so W_res + s·B·A equals W up to the rounding of that one subtraction.
///   PiSSA:  W = V·S·Uᴴ (SVD), S_r' = S_r / s, A = diag(√S_r')·Uᴴ_r, B = V_r·diag(√S_r')
///   OLoRA:  W = Q·R (reduced QR), A = R[:r], B = Q[:, :r]
public static class ResidualInit
{
    /// Seed of PiSSA's randomised sketch (pissa_niter_K): fixed, so that loading the adapter onto the
    /// original base recomputes the same residual (PEFT draws it from the global generator).
    public const long SketchSeed = 0;

    public static void Apply(LoraOptions o, Parameter baseWeight, Parameter a, Parameter b)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var type = baseWeight.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var w = baseWeight.detach().to(type);
        int r = o.Rank;
        Tensor newA, newB;
        if (o.Initialisation == LoraInit.Pissa)
        {
            var (v, s, uh) = o.PissaNiter is int niter ? LowRankSvd(w, r, niter) : Truncate(torch.linalg.svd(w, fullMatrices: false), r);
            using var scaling = o.Scaling.ToScalar();
            var root = (s / scaling).sqrt();
            newA = root.unsqueeze(1) * uh;          // diag(√S_r)·Uᴴ_r
            newB = v * root.unsqueeze(0);           // V_r·diag(√S_r)
        }
        else
        {
            var (q, rr) = torch.linalg.qr(w);
            newA = rr[..r];
            newB = q[.., ..r];
        }
        a.copy_(newA.contiguous());
        b.copy_(newB.contiguous());
        using var sc = o.Scaling.ToScalar();
        var residual = w - b.detach().to(type).matmul(a.detach().to(type)).mul(sc);
        baseWeight.copy_(residual);
    }

    static (Tensor V, Tensor S, Tensor Uh) Truncate((Tensor U, Tensor S, Tensor Vh) svd, int r) =>
        (svd.U[.., ..r], svd.S[..r], svd.Vh[..r]);

    /// torch.svd_lowrank(W, q = r, niter) (Halko et al.'s randomised range finder with niter
    /// subspace iterations), as PEFT calls it for "pissa_niter_K": W ≈ U·diag(S)·Vᵀ with r columns.
    public static (Tensor U, Tensor S, Tensor Vh) LowRankSvd(Tensor w, int r, int niter)
    {
        using var g = new torch.Generator(SketchSeed);
        var sketch = torch.randn(new[] { w.shape[1], (long)r }, dtype: w.dtype, generator: g).to(w.device);
        var q = torch.linalg.qr(w.matmul(sketch)).Q;
        for (var i = 0; i < niter; i++)
        {
            q = torch.linalg.qr(w.t().matmul(q)).Q;
            q = torch.linalg.qr(w.matmul(q)).Q;
        }
        var (u, s, vh) = torch.linalg.svd(q.t().matmul(w), fullMatrices: false);
        return (q.matmul(u), s, vh);
    }
}
