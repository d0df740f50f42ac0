using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// VPT shallow and deep on every <see cref="IPromptHost"/> (the zoo's ViT, SAM's ViT image encoder).
public sealed class VptMethod : TuningMethod
{
    public static readonly VptMethod Instance = new();

    VptMethod() { }

    public override string Name => "VPT";
    public override string PeftType => "VPT";
    public override string? OnePerModel => "a model can carry only one set of VPT prompts";
    public override string? NotMergeable =>
        "VPT is not mergeable: its prompt tokens lengthen the sequence every block attends over, which no weight change reproduces; keep the prompted model as it is";

    public override string NameOf(TuningConfig config) => ((VptConfig)config).Deep ? "VPT-deep" : "VPT-shallow";

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        // the encoder is often the model itself (the root, which the module list leaves out)
        foreach (var (path, m) in modules.Prepend(("", model)).DistinctBy(x => x.Item1))
            if (m is IPromptHost) matches.Add(new(path, "adapter_host", m.GetType().Name, ""));
        if (matches.Count == 0)
            errors.Add($"VPT found no encoder implementing IPromptHost in this {model.GetType().Name} (it fits the ViT family and SAM's ViT image encoder: vit, sam_vit; not TinyViT (tiny_vit, mobile_sam), whose convolutional first stage, patch-merging downsampling and depthwise conv after each attention leave prompt tokens no place; use adaptformer, lora, bitfit or ssf there)");
    }

    public override void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report) { }

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report)
    {
        var c = (VptConfig)config;
        var list = new List<(string, IPromptHost, VisualPrompts)>();
        foreach (var m in report.AdapterHosts)
        {
            var host = (IPromptHost)(m.Path.Length == 0 ? model.Model : ModuleTree.Get(model.Model, m.Path));
            var (dim, depth, patchArea) = host.PromptShape;
            var w = ((nn.Module)host).parameters().First();
            list.Add((m.Path, host, new VisualPrompts(c.Deep ? depth : 1, c.Tokens, dim, patchArea, w.dtype, w.device)));
        }
        return new Prompted(list);
    }

    sealed class Prompted(List<(string Path, IPromptHost Host, VisualPrompts Prompts)> hosts) : AttachedAdapter
    {
        public override void SetActive(bool on)
        {
            foreach (var (_, host, p) in hosts) host.SetPrompts(on ? p : null);
        }

        public override IEnumerable<Parameter> Parameters() => hosts.Select(h => h.Prompts.prompt_embeddings);

        public override IEnumerable<(string Key, Tensor Value)> Tensors() =>
            hosts.Select(h => ((h.Path.Length == 0 ? "" : h.Path + ".") + "prompt.prompt_embeddings", (Tensor)h.Prompts.prompt_embeddings));

        public override void Detach()
        {
            foreach (var (_, host, _) in hosts) host.SetPrompts(null);
        }
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new VptConfig
        {
            ModulesToSave = json.StrList("modules_to_save"),
            Tokens = json.Int("num_tokens", 1) ?? 10,
            Deep = json.Str("vpt_type") is "deep",
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (VptConfig)config;
        var o = Header();
        o["target_modules"] = null;
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["num_tokens"] = c.Tokens;
        o["vpt_type"] = c.Deep ? "deep" : "shallow";
        return o;
    }
}
