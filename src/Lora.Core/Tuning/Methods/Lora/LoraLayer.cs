using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// What LoRA around a Linear and around a Conv2d share, as PEFT's LoraLayer: per adapter the factors
/// A and B (modules of the base layer's kind) and DoRA's magnitude, under PEFT's keys
/// `lora_A.&lt;adapter&gt;.weight`, `lora_B.&lt;adapter&gt;.weight`, `lora_magnitude_vector.&lt;adapter&gt;.weight`;
/// the adapter's options; PEFT's initialisation (A Kaiming-uniform, or N(0, 1/r); B zero, so a fresh
/// adapter leaves the output unchanged; the magnitude ‖W + ΔW‖).
public abstract class LoraLayer<TFactor> : TunerLayer, ILoraLayer where TFactor : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are state-dict keys
    public AdapterSlots lora_A = new();
    public AdapterSlots lora_B = new();
    public AdapterSlots lora_magnitude_vector = new();
#pragma warning restore IDE1006
    protected readonly Dictionary<string, LoraOptions> options = new();

    protected LoraLayer(string name, nn.Module<Tensor, Tensor> baseLayer) : base(name, baseLayer) { }

    public override TuningMethod Owner => LoraMethod.Instance;
    public override string Method => options.Values.FirstOrDefault(o => o.Variant != LoraVariant.Plain)?.Variant.Name ?? LoraVariant.Plain.Name;
    public override IReadOnlyList<string> AdapterNames => options.Keys.ToList();
    public LoraOptions Options(string adapter) => options[adapter];
    public TFactor A(string adapter) => lora_A.Module<TFactor>(adapter);
    public TFactor B(string adapter) => lora_B.Module<TFactor>(adapter);
    public double Scaling(string adapter) => options[adapter].Scaling;
    protected static Parameter WeightOf(TFactor factor) => factor.get_parameter("weight")!;
    public Parameter WeightA(string adapter) => WeightOf(A(adapter));
    public Parameter WeightB(string adapter) => WeightOf(B(adapter));
    public virtual string? CannotCombine => null;

    /// ‖W + ΔW‖ as DoRA's magnitude is shaped for this kind of layer, detached.
    internal abstract Tensor WeightNorm(Tensor weight, string adapter);

    /// Adds an adapter with these (resolved) options: factors of the base layer's kind.
    public abstract void AddAdapter(string adapter, LoraOptions o);

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
            if (o.Initialisation is LoraInit.Pissa or LoraInit.Olora) InitFromWeight(o, WeightOf(a), WeightOf(b));
        }
        lora_A.AddModule(adapter, a);
        lora_B.AddModule(adapter, b);
        options[adapter] = o;
        o.Variant.Init(this, adapter);
    }

    /// PiSSA / OLoRA: A and B from the base weight, which becomes the residual (PEFT does these for
    /// Linear layers only; <see cref="LoraLinear"/> overrides this).
    protected virtual void InitFromWeight(LoraOptions o, Parameter a, Parameter b) =>
        throw new ArgumentException($"{o.Initialisation} initialisation applies to Linear layers only (as PEFT's), not to a {base_layer.GetType().Name}");

    public override IEnumerable<Parameter> AdapterParameters(string adapter) => PeftTensors(adapter, null).Select(t => (Parameter)t.Value);

    public override IEnumerable<(string Key, Tensor Value)> PeftTensors(string adapter, bool[]? keptRanks)
    {
        yield return ("lora_A.weight", WeightOf(A(adapter)));
        yield return ("lora_B.weight", WeightOf(B(adapter)));
        foreach (var (k, p) in options[adapter].Variant.Parameters(this, adapter)) yield return (k, p);
    }

    public override string GroupOf(string parameter) =>
        parameter.StartsWith("lora_magnitude_vector.", StringComparison.Ordinal) ? "DoRA magnitude" : Method;

    protected override void RemoveAdapterCore(string adapter)
    {
        lora_A.Remove(adapter); lora_B.Remove(adapter); lora_magnitude_vector.Remove(adapter);
        options.Remove(adapter);
    }
}

/// What LoRA layers of every kind offer without their factor type (PEFT's LoraLayer interface).
public interface ILoraLayer
{
    IReadOnlyList<string> AdapterNames { get; }
    void AddAdapter(string adapter, LoraOptions o);
    LoraOptions Options(string adapter);
    double Scaling(string adapter);
    Parameter WeightA(string adapter);
    Parameter WeightB(string adapter);
    /// Why the factors cannot be combined as a weighted adapter (null: they can).
    string? CannotCombine { get; }
}
