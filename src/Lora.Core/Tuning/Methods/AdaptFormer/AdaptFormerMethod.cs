using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// AdaptFormer in the MLP-parallel slot of every <see cref="IAdapterHost"/> block. The existing
/// bottleneck Adapter's parallel mode is the same place with a GELU bottleneck, scale 1 and an
/// attention-side adapter too; AdaptFormer has ReLU, scale 0.1 and no attention adapter. Both feed
/// the block's norm2 output to the bottleneck (the AdaptFormer paper feeds the un-normalised stream).
public sealed class AdaptFormerMethod : TuningMethod
{
    public static readonly AdaptFormerMethod Instance = new();

    AdaptFormerMethod() { }

    public override string Name => "AdaptFormer";
    public override string PeftType => "ADAPTFORMER";
    public override string? OnePerModel => "a model can carry only one set of AdaptFormer adapters";
    public override string? NotMergeable =>
        "AdaptFormer is not mergeable: its bottleneck is non-linear (ReLU between two Linears) and adds no weight to any base layer; keep the adapted model as it is";

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        foreach (var (path, m) in modules)
        {
            if (m is IAdapterHost) matches.Add(new(path, "adapter_host", m.GetType().Name, ""));
            if (m is IAdapterModule a) errors.Add($"'{path}' already holds a {a.Group} adapter: a block carries one set of block adapters");
        }
        if (!matches.Any(x => x.Role == "adapter_host"))
            errors.Add($"AdaptFormer found no transformer block implementing IAdapterHost in this {model.GetType().Name} (it fits ViT, TinyViT and SAM encoders; use lora, bitfit or ssf elsewhere)");
    }

    public override void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report) { }

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report)
    {
        var c = (AdaptFormerConfig)config;
        var list = new List<(string, IAdapterHost, AdaptFormerModule)>();
        foreach (var m in report.AdapterHosts)
        {
            var host = (IAdapterHost)ModuleTree.Get(model.Model, m.Path);
            var dim = host.AdapterDim ?? Width((nn.Module)host, m.Path);
            var w = ((nn.Module)host).parameters().First();
            list.Add((m.Path, host, new AdaptFormerModule(dim, c.Width, w.dtype, w.device)));
        }
        return new Hosted(list, c.Scale);
    }

    static long Width(nn.Module host, string path)
    {
        foreach (var (name, child) in host.named_children())
            if (name == "norm2" && child is LayerNorm n) return n.normalized_shape[0];
        foreach (var (_, child) in host.named_modules())
            if (child is Linear l) return l.in_features;
        throw new ArgumentException($"cannot tell the width of adapter host '{path}': implement IAdapterHost.AdapterDim");
    }

    sealed class Hosted(List<(string Path, IAdapterHost Host, AdaptFormerModule Mlp)> hosts, double scale) : AttachedAdapter
    {
        public override void SetActive(bool on)
        {
            foreach (var (_, host, mlp) in hosts) host.SetAdapters(null, on ? mlp : null, scale);
        }

        public override IEnumerable<Parameter> Parameters() => hosts.SelectMany(h => h.Mlp.parameters());

        public override IEnumerable<(string Key, Tensor Value)> Tensors() =>
            hosts.SelectMany(h => h.Mlp.named_parameters().Select(p => ($"{h.Path}.adapter_mlp.{p.name}", (Tensor)p.parameter)));

        public override void Detach()
        {
            foreach (var (_, host, _) in hosts) host.SetAdapters(null, null, scale);
        }
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new AdaptFormerConfig
        {
            ModulesToSave = json.StrList("modules_to_save"),
            Width = json.Int("ffn_num", 1) ?? 64,
            Scale = json.Num("ffn_adapter_scalar") ?? 0.1,
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (AdaptFormerConfig)config;
        var o = Header();
        o["target_modules"] = null;
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        // the AdaptFormer repository's names
        o["ffn_num"] = c.Width;
        o["ffn_adapter_scalar"] = c.Scale;
        o["ffn_option"] = "parallel";
        return o;
    }
}
