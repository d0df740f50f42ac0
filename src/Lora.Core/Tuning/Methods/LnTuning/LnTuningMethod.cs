using System.Text.Json.Nodes;
using Lora.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// LayerNorm tuning (PEFT's LN_TUNING): the affine parameters of the targeted norms train (every
/// LayerNorm and LayerNorm2d when none are named).
public sealed class LnTuningMethod : TuningMethod
{
    public static readonly LnTuningMethod Instance = new();

    LnTuningMethod() { }

    public override string Name => "LN tuning";
    public override string PeftType => "LN_TUNING";

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors) =>
        MatchTargetsOrAll(model, modules, config, matches, errors,
            "LayerNorm or LayerNorm2d (a BatchNorm model such as a ResNet fits bitfit or ssf instead)");

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) => module switch
    {
        LayerNorm n when n.normalized_shape.Length == 1 && Channels.Own(n, "weight") is not null => null,
        LayerNorm2d => null,
        _ => $"'{path}' is a {module.GetType().Name}, which LN tuning cannot tune (it tunes LayerNorm and LayerNorm2d layers with an affine weight; for BatchNorm use bitfit or ssf)",
    };

    protected override TunerLayer CreateLayer(nn.Module module, string path) => new LnTuningLayer((nn.Module<Tensor, Tensor>)module);

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path) => ((LnTuningLayer)layer).AddAdapter(adapter);

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report) => NamedTargets.Of(report);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new LnTuningConfig { Targets = json.StrList("target_modules"), ModulesToSave = json.StrList("modules_to_save") }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var o = Header();
        o["target_modules"] = TargetsJson(config.Targets);
        o["exclude_modules"] = null;
        o["modules_to_save"] = ListJson(config.ModulesToSave);
        return o;
    }
}
