using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// Convpass beside the attention and the MLP of every <see cref="IBypassHost"/> block: the zoo's
/// ViT, SAM's ViT image encoder, and TinyViT's attention blocks (tiny_vit, MobileSAM's encoder; its
/// convolutional first stage has no attention and is left alone), each bypass sized to its block.
public sealed class ConvpassMethod : TuningMethod
{
    public static readonly ConvpassMethod Instance = new();

    ConvpassMethod() { }

    public override string Name => "Convpass";
    public override string PeftType => "CONVPASS";
    public override string? OnePerModel => "a model can carry only one set of Convpass bypasses";
    public override string? NotMergeable =>
        "Convpass is not mergeable: its bypass is non-linear (QuickGELU around a 3×3 conv that mixes neighbouring tokens) and adds no weight to any base layer; keep the adapted model as it is";

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        foreach (var (path, m) in modules)
        {
            if (m is IBypassHost) matches.Add(new(path, "adapter_host", m.GetType().Name, ""));
            if (m is ConvpassModule) errors.Add($"'{path}' already holds a Convpass bypass");
        }
        if (!matches.Any(x => x.Role == "adapter_host"))
            errors.Add($"Convpass found no transformer block implementing IBypassHost in this {model.GetType().Name} (it fits the ViT, TinyViT and SAM encoder families: vit, tiny_vit, sam_vit, sam_tiny_vit, mobile_sam; use lora, bitfit or ssf elsewhere)");
    }

    public override void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report) { }

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report)
    {
        var c = (ConvpassConfig)config;
        var list = new List<(string, IBypassHost, ConvpassModule, ConvpassModule)>();
        foreach (var m in report.AdapterHosts)
        {
            var host = (IBypassHost)ModuleTree.Get(model.Model, m.Path);
            var w = ((nn.Module)host).parameters().First();
            list.Add((m.Path, host, new ConvpassModule(host.BypassDim, c.Width, c.Dropout, w.dtype, w.device),
                      new ConvpassModule(host.BypassDim, c.Width, c.Dropout, w.dtype, w.device)));
        }
        return new Hosted(list, c.Scale);
    }

    sealed class Hosted(List<(string Path, IBypassHost Host, ConvpassModule Attn, ConvpassModule Mlp)> hosts, double scale) : AttachedAdapter
    {
        public override void SetActive(bool on)
        {
            foreach (var (_, host, a, m) in hosts) host.SetBypasses(on ? a : null, on ? m : null, scale);
        }

        public override IEnumerable<Parameter> Parameters() => hosts.SelectMany(h => h.Attn.parameters().Concat(h.Mlp.parameters()));

        public override IEnumerable<(string Key, Tensor Value)> Tensors() =>
            hosts.SelectMany(h =>
                h.Attn.named_parameters().Select(p => ($"{h.Path}.convpass_attn.{p.name}", (Tensor)p.parameter))
                    .Concat(h.Mlp.named_parameters().Select(p => ($"{h.Path}.convpass_mlp.{p.name}", (Tensor)p.parameter))));

        public override void Detach()
        {
            foreach (var (_, host, _, _) in hosts) host.SetBypasses(null, null, scale);
        }
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new ConvpassConfig
        {
            ModulesToSave = json.StrList("modules_to_save"),
            Width = json.Int("dim", 1) ?? 8,
            Scale = json.Num("s") ?? 1.0,
            Dropout = json.Num("dropout") ?? 0.1,
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (ConvpassConfig)config;
        var o = Header();
        o["target_modules"] = null;
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        // the reference code's set_Convpass(model, method, dim, s, xavier_init) names
        o["method"] = "convpass";
        o["dim"] = c.Width;
        o["s"] = c.Scale;
        o["xavier_init"] = false;
        o["dropout"] = c.Dropout;
        return o;
    }
}
