using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// SSF: a scale and shift after each targeted layer (every Linear, Conv2d and norm with a bias when
/// none are named), folded into the layer when merged.
public sealed class SsfMethod : TuningMethod
{
    public static readonly SsfMethod Instance = new();

    SsfMethod() { }

    public override string Name => "SSF";
    public override string PeftType => "SSF";

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors) =>
        MatchTargetsOrAll(model, modules, config, matches, errors, "Linear, Conv2d, LayerNorm, BatchNorm2d or LayerNorm2d with a bias");

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) =>
        Channels.Of(module) is null || Channels.Own(module, "weight") is null
            ? $"'{path}' is a {module.GetType().Name}, which SSF cannot tune (supported: Linear, Conv2d, LayerNorm, BatchNorm2d, LayerNorm2d)"
            : Channels.Own(module, "bias") is null ? $"'{path}' has no bias to merge SSF's shift into; leave it out of the targets" : null;

    protected override TunerLayer CreateLayer(nn.Module module, string path) => new SsfLayer((nn.Module<Tensor, Tensor>)module);

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path) =>
        ((SsfLayer)layer).AddAdapter(adapter, ((SsfConfig)config).InitStd);

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report) => NamedTargets.Of(report);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new SsfConfig
        {
            Targets = json.StrList("target_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            InitStd = json.Num("init_std") ?? 0,
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (SsfConfig)config;
        var o = Header();
        o["target_modules"] = TargetsJson(c.Targets);
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["bias"] = BiasJson(BiasMode.None);
        o["init_std"] = c.InitStd;
        return o;
    }
}
