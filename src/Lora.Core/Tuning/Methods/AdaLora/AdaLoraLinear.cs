using Lora.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaLoRA around a Linear layer, as PEFT's adalora.SVDLinear: x·(A ∘ E)ᵀ·Bᵀ·scaling / (ranknum + 1e-5)
/// added to the base output.
public sealed class AdaLoraLinear : AdaLoraLayer
{
    public AdaLoraLinear(Linear baseLayer) : base(nameof(AdaLoraLinear), baseLayer) => RegisterComponents();

    public Linear Base => (Linear)base_layer;
    public override Parameter BaseWeight => Base.weight!;
    public override long InFeatures => Base.in_features;
    public override long OutFeatures => Base.out_features;
    protected override string LayerKind => "Linear";

    protected override Tensor AddAdapterOutput(Tensor result, Tensor x, string adapter)
    {
        using var scope = torch.NewDisposeScope();
        var xd = Dropout(x, options[adapter].dropout);
        var h = xd.matmul(In(A(adapter) * ScaledE(adapter), xd).t());
        return AddLowRank(result, h, In(B(adapter), xd), 1.0).MoveToOuterDisposeScope();
    }
}
