using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// FacT's factors shared by every tuned layer, registered once on the model's root as `fact`:
/// `FacTu` (r × d) and `FacTv` (d × r), the reference's FacTu/FacTv Linear weights (U Kaiming-uniform
/// as nn.Linear, V zero so a fresh adapter changes nothing); with Tucker also `FacTc` (r × r × r) and
/// `FacTp` (r × slices), both Xavier-uniform as the reference.
public sealed class FactFactors : nn.Module, IAdapterModule
{
#pragma warning disable IDE1006 // state-dict keys
    public Parameter FacTu;
    public Parameter FacTv;
    public Parameter? FacTc;
    public Parameter? FacTp;
#pragma warning restore IDE1006

    public FactFactors(long width, int rank, FactVariant variant, long slices, ScalarType dtype, Device device) : base(nameof(FactFactors))
    {
        Width = width;
        using (torch.no_grad())
        {
            FacTu = new Parameter(torch.empty(rank, width, dtype: dtype, device: device));
            nn.init.kaiming_uniform_(FacTu, a: Math.Sqrt(5));
            FacTv = new Parameter(torch.zeros(width, rank, dtype: dtype, device: device));
            if (variant == FactVariant.Tk)
            {
                FacTc = new Parameter(torch.empty(rank, rank, rank, dtype: dtype, device: device));
                nn.init.xavier_uniform_(FacTc);
                FacTp = new Parameter(torch.empty(rank, slices, dtype: dtype, device: device));
                nn.init.xavier_uniform_(FacTp);
            }
        }
        RegisterComponents();
    }

    public string Group => "FacT";

    /// d, the width every slice has (the ViT's embedding width).
    public long Width { get; }

    public IEnumerable<(string Name, Parameter Value)> Named() =>
        new[] { ("FacTu", FacTu), ("FacTv", FacTv), ("FacTc", FacTc), ("FacTp", FacTp) }
            .Where(x => x.Item2 is not null).Select(x => (x.Item1, x.Item2!));

    /// Tucker: the Σ of `count` consecutive slices from `offset`, each (C ×₃ p_t)ᵀ, as [count, r, r].
    public Tensor TuckerSlices(int offset, int count)
    {
        var p = FacTp!.narrow(1, offset, count);                 // [r, count]
        return FacTc!.matmul(p).permute(2, 1, 0);                 // [count, b, a] = C_t[a, b]
    }
}
