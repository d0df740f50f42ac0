using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// BitFit: the biases of the targets (every layer with a bias when none are named) train, as a
/// change of each bias that merges into it.
public sealed class BitFitMethod : TuningMethod
{
    public static readonly BitFitMethod Instance = new();

    BitFitMethod() { }

    public override string Name => "BitFit";
    public override string PeftType => "BITFIT";

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors) =>
        MatchTargetsOrAll(model, modules, config, matches, errors, "layer with a bias (Linear, Conv2d, LayerNorm, BatchNorm2d, LayerNorm2d)");

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) =>
        Channels.Of(module) is null
            ? $"'{path}' is a {module.GetType().Name}, which BitFit cannot tune (it trains the bias of Linear, Conv2d, LayerNorm, BatchNorm2d and LayerNorm2d layers)"
            : Channels.Own(module, "bias") is null ? $"'{path}' has no bias for BitFit to train" : null;

    protected override TunerLayer CreateLayer(nn.Module module, string path) => new BitFitLayer((nn.Module<Tensor, Tensor>)module);

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path) => ((BitFitLayer)layer).AddAdapter(adapter);

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report) => NamedTargets.Of(report);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new BitFitConfig { Targets = json.StrList("target_modules"), ModulesToSave = json.StrList("modules_to_save") }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var o = Header();
        o["target_modules"] = TargetsJson(config.Targets);
        o["modules_to_save"] = ListJson(config.ModulesToSave);
        o["bias"] = BiasJson(BiasMode.None);
        return o;
    }
}
