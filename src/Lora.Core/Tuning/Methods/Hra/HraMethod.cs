using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// HRA on Linear and Conv2d layers, as PEFT's HRAModel.
public sealed class HraMethod : TuningMethod
{
    public static readonly HraMethod Instance = new();

    HraMethod() { }

    public override string Name => "HRA";
    public override string PeftType => "HRA";

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) =>
        WeightTransformLayer.CheckTarget(path, module, Name)
        ?? (((HraConfig)config).Rank > WeightTransformLayer.FeaturesOf(module)
            ? $"'{path}': HRA r = {((HraConfig)config).Rank} is larger than its {WeightTransformLayer.FeaturesOf(module)} input features" : null);

    protected override TunerLayer CreateLayer(nn.Module module, string path) => new HraLayer((nn.Module<Tensor, Tensor>)module);

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path) =>
        ((HraLayer)layer).AddAdapter(adapter, (HraConfig)config);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new HraConfig
        {
            Targets = json.StrList("target_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            Rank = json.Int("r", 1) ?? 8,
            ApplyGs = json.Bool("apply_GS"),
            InitWeights = json["init_weights"] is null || json.Bool("init_weights"),
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (HraConfig)config;
        var o = Header();
        o["r"] = c.Rank;
        o["apply_GS"] = c.ApplyGs;
        o["target_modules"] = TargetsJson(c.Targets);
        o["exclude_modules"] = null;
        o["init_weights"] = c.InitWeights;
        o["layers_to_transform"] = null;
        o["layers_pattern"] = null;
        o["bias"] = "none";
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        return o;
    }
}
