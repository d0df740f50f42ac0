using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// What LoRA around a Linear and around a Conv2d share, as PEFT's LoraLayer: per adapter the factors
/// A and B (modules of the base layer's kind) and DoRA's magnitude, under PEFT's keys
/// `lora_A.&lt;adapter&gt;.weight`, `lora_B.&lt;adapter&gt;.weight`, `lora_magnitude_vector.&lt;adapter&gt;.weight`;
/// the adapter's options; PEFT's initialisation (A Kaiming-uniform, or N(0, 1/r); B zero, so a fresh
/// adapter leaves the output unchanged; the magnitude ‖W + ΔW‖).
public abstract class LoraLayer<TFactor> : TunerLayer where TFactor : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots lora_A = new();
    public AdapterSlots lora_B = new();
    public AdapterSlots lora_magnitude_vector = new();
#pragma warning restore IDE1006
    protected readonly Dictionary<string, LoraOptions> options = new();
    // Numbers in tensor ops are held as Scalars (static fields, `using` locals) until the op returns:
    // a temporary Scalar (from `t * 2.0`) may be finalized by the GC while native code still reads it.
    protected static readonly Scalar One = 1.ToScalar();

    protected LoraLayer(string name, nn.Module<Tensor, Tensor> baseLayer) : base(name, baseLayer) { }

    public override string Method => options.Values.Any(o => o.UseDora) ? "DoRA" : "LoRA";
    public override IReadOnlyList<string> AdapterNames => options.Keys.ToList();
    public LoraOptions Options(string adapter) => options[adapter];
    public TFactor A(string adapter) => lora_A.Module<TFactor>(adapter);
    public TFactor B(string adapter) => lora_B.Module<TFactor>(adapter);
    public double Scaling(string adapter) => options[adapter].Scaling;
    protected static Parameter WeightOf(TFactor factor) => factor.get_parameter("weight")!;
    protected Parameter Magnitude(string adapter) => lora_magnitude_vector.Module<DoraMagnitude>(adapter).weight;

    /// ‖W + ΔW‖ as DoRA's magnitude is shaped for this kind of layer, detached.
    protected abstract Tensor WeightNorm(Tensor weight, string adapter);

    protected void RejectExisting(string adapter)
    {
        if (options.ContainsKey(adapter)) throw new ArgumentException($"adapter '{adapter}' already exists on this layer");
    }

    /// Initialises and registers the factors (and DoRA's magnitude) of a new adapter.
    protected void Register(string adapter, LoraOptions o, TFactor a, TFactor b)
    {
        using (torch.no_grad())
        {
            if (o.InitGaussian) nn.init.normal_(WeightOf(a), 0, 1.0 / o.Rank);
            else nn.init.kaiming_uniform_(WeightOf(a), a: Math.Sqrt(5));
            nn.init.zeros_(WeightOf(b));
        }
        lora_A.AddModule(adapter, a);
        lora_B.AddModule(adapter, b);
        options[adapter] = o;
        if (o.UseDora)
        {
            using var _ = torch.no_grad();
            lora_magnitude_vector.AddModule(adapter, new DoraMagnitude(WeightNorm(BaseWeight.detach(), adapter)));
        }
    }

    public override IEnumerable<Parameter> AdapterParameters(string adapter)
    {
        yield return WeightOf(A(adapter));
        yield return WeightOf(B(adapter));
        if (options[adapter].UseDora) yield return Magnitude(adapter);
    }

    protected override void RemoveAdapterCore(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); lora_magnitude_vector.Remove(adapter);
        options.Remove(adapter);
    }
}
