using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// One OFT adapter of one layer, as PEFT's OFTRotationModule: `weight` (stored blocks × b(b−1)/2)
/// holds the upper triangles of skew-symmetric b×b matrices Q (row-major, as torch.triu_indices(b,
/// b, 1)); each block is the Cayley transform of its Q, exact, R = (I − Q)(I + Q)⁻¹, or PEFT's
/// Neumann series R = I + 2Q + 2Q² + … + 2Qⁿ⁻² + Qⁿ⁻¹ (its code, term for term: the two differ in the
/// sign of Q, and a checkpoint is read with the parametrisation it was trained with).
public sealed class OftRotation : nn.Module
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public Parameter weight;
#pragma warning restore IDE1006
    readonly long[] upper; // flat indices of the upper triangle in a b×b matrix (not a tensor field: no buffer)

    public OftRotation(int blocks, int blockSize, OftConfig config, Tensor like) : base(nameof(OftRotation))
    {
        Blocks = blocks;
        BlockSize = blockSize;
        Config = config;
        var n = blockSize * (blockSize - 1) / 2;
        weight = new Parameter(torch.zeros(config.BlockShare ? 1 : blocks, n, dtype: like.dtype, device: like.device));
        if (!config.InitWeights) { using var _ = torch.no_grad(); nn.init.normal_(weight, 0.0, 0.1); }
        upper = new long[n];
        for (int i = 0, k = 0; i < blockSize; i++) for (var j = i + 1; j < blockSize; j++) upper[k++] = i * blockSize + j;
        RegisterComponents();
    }

    /// The number of blocks on the layer (r), stored or shared.
    public int Blocks { get; }

    public int BlockSize { get; }

    public OftConfig Config { get; }

    /// The skew-symmetric matrices (stored blocks, b, b) of a weight.
    Tensor Skew(Tensor vec)
    {
        using var scope = torch.NewDisposeScope();
        var m = torch.zeros(vec.shape[0], (long)BlockSize * BlockSize, dtype: vec.dtype, device: vec.device)
            .index_copy(1, torch.tensor(upper, device: vec.device), vec).view(vec.shape[0], BlockSize, BlockSize);
        return (m - m.transpose(1, 2)).MoveToOuterDisposeScope();
    }

    /// COFT (PEFT's _project_batch): a block's Q whose Frobenius norm exceeds eps/√(stored blocks) is
    /// scaled back to it; written into the weight, as PEFT does before every use.
    void Project()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var q = Skew(weight.detach());
        var eps = Config.Eps / Math.Sqrt(q.shape[0]);
        var norm = torch.linalg.norm(q, dims: [1, 2], keepdim: true);
        var projected = torch.where(norm <= eps, q, q * (eps / norm));
        weight.copy_(projected.flatten(1).index_select(1, torch.tensor(upper, device: q.device)));
    }

    /// The orthogonal blocks (stored blocks, b, b), with gradient to the weight.
    public Tensor Rotations()
    {
        if (Config.Coft) Project();
        using var scope = torch.NewDisposeScope();
        var q = Skew(weight);
        var d = q.shape[0];
        var eye = torch.eye(BlockSize, dtype: q.dtype, device: q.device).expand(d, BlockSize, BlockSize);
        Tensor r;
        if (!Config.UseCayleyNeumann) r = torch.linalg.solve(eye + q, eye - q);
        else
        {
            // PEFT's loop as written: I, + 2Q, + 2Q², + 2Q³ … (range(3, terms − 1)), then + Q^last once
            var terms = Config.NumCayleyNeumannTerms;
            r = eye.clone();
            if (terms > 1)
            {
                r = r + 2.0 * q;
                if (terms > 2)
                {
                    var power = q.bmm(q);
                    r = r + 2.0 * power;
                    for (var i = 3; i < terms - 1; i++) { power = power.bmm(q); r = r + 2.0 * power; }
                    power = power.bmm(q);
                    r = r + power;
                }
            }
        }
        if (training && Config.ModuleDropout > 0 && d > 1) r = DropBlocks(r, eye);
        return r.MoveToOuterDisposeScope();
    }

    /// PEFT's MultiplicativeDropoutLayer: ⌊p·D⌋ randomly chosen blocks become the identity.
    Tensor DropBlocks(Tensor r, Tensor eye)
    {
        var d = r.shape[0];
        var dropped = (long)(Config.ModuleDropout * d);
        var mask = torch.cat([torch.ones(dropped, dtype: r.dtype, device: r.device), torch.zeros(d - dropped, dtype: r.dtype, device: r.device)]);
        mask = mask[torch.randperm(d, device: r.device)].view(d, 1, 1);
        return (1.0 - mask) * r + mask * eye;
    }

    /// W·Rᵀ for a weight whose rows (out) have the rotated side flattened last (in, or in·kh·kw), in
    /// the rotations' dtype, with gradient to them.
    public Tensor Rotate(Tensor w)
    {
        using var scope = torch.NewDisposeScope();
        var r = Rotations();
        var shape = w.shape;
        var x = w.to(r.dtype).reshape(shape[0], Blocks, BlockSize);
        var rotated = r.shape[0] == 1 ? torch.einsum("orb,cb->orc", x, r[0]) : torch.einsum("orb,rcb->orc", x, r);
        return rotated.reshape(shape).MoveToOuterDisposeScope();
    }
}
