using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaptFormer's AdaptMLP without its own scale (the host applies it): up(relu(down(x))), with the
/// official "lora" initialisation (down Kaiming-uniform, up and both biases zero), so a fresh adapter
/// adds nothing. Keys `down_proj.weight`, `up_proj.weight` as in the AdaptFormer repository.
public sealed class AdaptFormerModule : nn.Module<Tensor, Tensor>, IAdapterModule
{
#pragma warning disable IDE1006
    public Linear down_proj;
    public Linear up_proj;
#pragma warning restore IDE1006

    public AdaptFormerModule(long dim, long width, ScalarType? dtype = null, Device? device = null) : base(nameof(AdaptFormerModule))
    {
        if (width > BottleneckAdapter.MaxRatio * dim)
            throw new ArgumentException($"AdaptFormer width {width} is more than {BottleneckAdapter.MaxRatio}x the block's width {dim}");
        down_proj = nn.Linear(dim, width, dtype: dtype, device: device);
        up_proj = nn.Linear(width, dim, dtype: dtype, device: device);
        using (torch.no_grad())
        {
            nn.init.kaiming_uniform_(down_proj.weight!, a: Math.Sqrt(5));
            nn.init.zeros_(down_proj.bias!); nn.init.zeros_(up_proj.weight!); nn.init.zeros_(up_proj.bias!);
        }
        RegisterComponents();
    }

    public string Group => "AdaptFormer";

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.relu(nn.functional.linear(x, TunerLayer.In(down_proj.weight!, x), TunerLayer.In(down_proj.bias!, x)));
        return nn.functional.linear(h, TunerLayer.In(up_proj.weight!, x), TunerLayer.In(up_proj.bias!, x)).MoveToOuterDisposeScope();
    }
}
