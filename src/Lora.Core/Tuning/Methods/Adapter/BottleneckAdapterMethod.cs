using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// Bottleneck adapters: one beside the attention and one beside the MLP of every block that
/// implements <see cref="IAdapterHost"/>. Not mergeable.
public sealed class BottleneckAdapterMethod : TuningMethod
{
    public static readonly BottleneckAdapterMethod Instance = new();

    BottleneckAdapterMethod() { }

    public override string Name => "Adapter";
    public override string PeftType => "BOTTLENECK_ADAPTER";
    public override string? OnePerModel => "a model can carry only one set of bottleneck adapters";
    public override string? NotMergeable =>
        "bottleneck Adapters are not mergeable: they are non-linear (GELU between two Linears) and add no weight to any base layer; keep the adapted model as it is";

    /// The targets are the adapter hosts, whatever the patterns (which the config refuses).
    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        foreach (var (path, m) in modules)
            if (m is IAdapterHost) matches.Add(new(path, "adapter_host", m.GetType().Name, ""));
        if (matches.Count == 0)
            errors.Add($"the Adapter method found no block implementing IAdapterHost in this {model.GetType().Name} (it fits ViT, TinyViT and SAM encoders; use lora, bitfit or ssf elsewhere)");
    }

    /// The adapters are made after the modules to save are wrapped (the order of random draws).
    public override void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report) { }

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report)
    {
        var c = (BottleneckAdapterConfig)config;
        var list = new List<(string, IAdapterHost, BottleneckAdapter, BottleneckAdapter)>();
        foreach (var m in report.AdapterHosts)
        {
            var host = (IAdapterHost)ModuleTree.Get(model.Model, m.Path);
            var dim = host.AdapterDim ?? InferDim((nn.Module)host, m.Path);
            var w = ((nn.Module)host).parameters().First();
            list.Add((m.Path, host, new BottleneckAdapter(dim, c.Ratio, c.InitIdentity, w.dtype, w.device, c.Width),
                                    new BottleneckAdapter(dim, c.Ratio, c.InitIdentity, w.dtype, w.device, c.Width)));
        }
        return new Hosted(list, c.MlpScale);
    }

    static long InferDim(nn.Module host, string path)
    {
        foreach (var (name, child) in host.named_children())
            if (name == "norm1" && child is LayerNorm n) return n.normalized_shape[0];
        foreach (var (_, child) in host.named_modules())
            if (child is Linear l) return l.in_features;
        throw new ArgumentException($"cannot tell the width of adapter host '{path}': implement IAdapterHost.AdapterDim");
    }

    sealed class Hosted(List<(string Path, IAdapterHost Host, BottleneckAdapter Attn, BottleneckAdapter Mlp)> hosts, double mlpScale) : AttachedAdapter
    {
        public override void SetActive(bool on)
        {
            foreach (var (_, host, attn, mlp) in hosts) host.SetAdapters(on ? attn : null, on ? mlp : null, mlpScale);
        }

        public override IEnumerable<Parameter> Parameters() => hosts.SelectMany(h => h.Attn.parameters().Concat(h.Mlp.parameters()));

        /// `&lt;block&gt;.adapter_attn.fc1.weight`, as the host registers them.
        public override IEnumerable<(string Key, Tensor Value)> Tensors() =>
            hosts.SelectMany(h => h.Attn.named_parameters().Select(p => ($"{h.Path}.adapter_attn.{p.name}", (Tensor)p.parameter))
                                    .Concat(h.Mlp.named_parameters().Select(p => ($"{h.Path}.adapter_mlp.{p.name}", (Tensor)p.parameter))));

        public override void Detach()
        {
            foreach (var (_, host, _, _) in hosts) host.SetAdapters(null, null, mlpScale);
        }
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new BottleneckAdapterConfig
        {
            Bias = json.Bias(),
            ModulesToSave = json.StrList("modules_to_save"),
            Ratio = json.Num("adapter_ratio") ?? 0.25,
            Width = json.Int("adapter_width", 0) ?? 0,
            MlpScale = json.Num("adapter_mlp_scale") ?? 1.0,
            InitIdentity = json["adapter_init_identity"] is null || json.Bool("adapter_init_identity"),
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (BottleneckAdapterConfig)config;
        var o = Header();
        o["target_modules"] = null;
        o["bias"] = BiasJson(c.Bias);
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["adapter_ratio"] = c.Ratio;
        o["adapter_width"] = c.Width;
        o["adapter_mlp_scale"] = c.MlpScale;
        o["adapter_init_identity"] = c.InitIdentity;
        return o;
    }
}
