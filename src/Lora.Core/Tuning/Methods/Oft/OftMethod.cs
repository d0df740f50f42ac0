using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// OFT on Linear and Conv2d layers, as PEFT's OFTModel.
public sealed class OftMethod : TuningMethod
{
    public static readonly OftMethod Instance = new();

    OftMethod() { }

    public override string Name => "OFT";
    public override string PeftType => "OFT";

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) =>
        WeightTransformLayer.CheckTarget(path, module, Name);

    protected override TunerLayer CreateLayer(nn.Module module, string path) => new OftLayer((nn.Module<Tensor, Tensor>)module);

    protected override void AddAdapter(TunerLayer layer, string adapter, TuningConfig config, string path) =>
        ((OftLayer)layer).AddAdapter(adapter, (OftConfig)config);

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json)
    {
        // PEFT's OFTConfig.check_kwargs: adapters before 0.14 had another layout
        if (json["oft_block_size"] is null)
            throw new InvalidDataException($"'{json.Path}': no oft_block_size: an OFT adapter saved before PEFT 0.14 has another layout; retrain it with a newer PEFT");
        return (new OftConfig
        {
            Targets = json.StrList("target_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            Rank = json.Int("r", 0) ?? 0,
            BlockSize = json.Int("oft_block_size", 0) ?? 32,
            ModuleDropout = json.Num("module_dropout") ?? 0,
            Coft = json.Bool("coft"),
            Eps = json.Num("eps") ?? 6e-5,
            BlockShare = json.Bool("block_share"),
            UseCayleyNeumann = json["use_cayley_neumann"] is null || json.Bool("use_cayley_neumann"),
            NumCayleyNeumannTerms = json.Int("num_cayley_neumann_terms", 1) ?? 5,
            InitWeights = json["init_weights"] is null || json.Bool("init_weights"),
        }, null);
    }

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (OftConfig)config;
        var o = Header();
        // the Cayley-Neumann series as PEFT ≥ 0.18 computes it (PEFT warns for older or missing versions)
        o["peft_version"] = "0.20.0";
        o["r"] = c.Rank;
        o["oft_block_size"] = c.BlockSize;
        o["module_dropout"] = c.ModuleDropout;
        o["target_modules"] = TargetsJson(c.Targets);
        o["fan_in_fan_out"] = false;
        o["bias"] = "none";
        o["exclude_modules"] = null;
        o["init_weights"] = c.InitWeights;
        o["layers_to_transform"] = null;
        o["layers_pattern"] = null;
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["coft"] = c.Coft;
        o["eps"] = c.Eps;
        o["block_share"] = c.BlockShare;
        o["use_cayley_neumann"] = c.UseCayleyNeumann;
        o["num_cayley_neumann_terms"] = c.NumCayleyNeumannTerms;
        return o;
    }
}
