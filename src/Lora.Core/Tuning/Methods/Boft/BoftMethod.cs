using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// BOFT on Linear and Conv2d layers, as PEFT's BOFTModel.
public sealed class BoftMethod : TuningMethod
{
    public static readonly BoftMethod Instance = new();

    BoftMethod() { }

    public override string Name => "BOFT";
    public override string PeftType => "BOFT";

    /// The layout check, then PEFT's block size / count / butterfly rules on the layer's features.
    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) =>
        WeightTransformLayer.CheckTarget(path, module, Name)
        ?? (((BoftConfig)config).Resolve(WeightTransformLayer.FeaturesOf(module)).Error is { } e ? $"'{path}': {e}" : null);

    protected override TunerLayer CreateLayer(nn.Module module, string path) => new BoftLayer((nn.Module<Tensor, Tensor>)module);

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path) =>
        ((BoftLayer)layer).AddAdapter(adapter, (BoftConfig)config);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new BoftConfig
        {
            Targets = json.StrList("target_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            BlockSize = json.Int("boft_block_size", 0) ?? 4,
            BlockNum = json.Int("boft_block_num", 0) ?? 0,
            ButterflyFactor = json.Int("boft_n_butterfly_factor", 1) ?? 1,
            Dropout = json.Num("boft_dropout") ?? 0,
            InitWeights = json["init_weights"] is null || json.Bool("init_weights"),
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (BoftConfig)config;
        var o = Header();
        o["boft_block_size"] = c.BlockSize;
        o["boft_block_num"] = c.BlockNum;
        o["boft_n_butterfly_factor"] = c.ButterflyFactor;
        o["target_modules"] = TargetsJson(c.Targets);
        o["exclude_modules"] = null;
        o["boft_dropout"] = c.Dropout;
        o["fan_in_fan_out"] = false;
        o["bias"] = "none";
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["init_weights"] = c.InitWeights;
        o["layers_to_transform"] = null;
        o["layers_pattern"] = null;
        return o;
    }
}
