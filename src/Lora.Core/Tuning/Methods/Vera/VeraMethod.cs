using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// VeRA on Linear layers, as PEFT's VeraModel: the shared A and B are drawn once per adapter, sized
/// for the largest target, and live beside the layers (saved as PEFT saves them, `base_model.vera_A`
/// and `base_model.vera_B`, when save_projection is set).
public sealed class VeraMethod : TuningMethod
{
    public static readonly VeraMethod Instance = new();

    VeraMethod() { }

    public override string Name => "VeRA";
    public override string PeftType => "VERA";

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) => module switch
    {
        Linear => null,
        _ => $"'{path}' is a {module.GetType().Name}, which VeRA cannot tune (supported: Linear); narrow the pattern",
    };

    /// PEFT's _kaiming_init: U(−b, b), b = √3 · √2 / √fan_in, from a CPU generator seeded with the key (A first, then B).
    public static (Tensor A, Tensor B) Projections(int rank, long inDim, long outDim, int key)
    {
        using var g = new torch.Generator((ulong)key);
        using var _ = torch.no_grad();
        Tensor Draw(long rows, long cols)
        {
            var bound = Math.Sqrt(3.0) * Math.Sqrt(2.0) / Math.Sqrt(cols);
            return torch.empty(rows, cols).uniform_(-bound, bound, generator: g);
        }
        var a = Draw(rank, inDim);
        var b = Draw(outDim, rank);
        return (a, b);
    }

    sealed class Shared(Tensor a, Tensor b, bool save) : AttachedAdapter
    {
        public override IEnumerable<(string Key, Tensor Value)> Tensors() =>
            save ? [(AdapterCheckpoint.OutsideModel + "vera_A", a), (AdapterCheckpoint.OutsideModel + "vera_B", b)] : [];
    }

    readonly System.Runtime.CompilerServices.ConditionalWeakTable<TuningConfig, Tuple<Tensor, Tensor>> made = new();

    public override void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report)
    {
        var c = (VeraConfig)config;
        var linears = report.Targets.Select(m => (m.Path, Module: ModuleTree.Get(model, m.Path))).ToList();
        Linear Of(nn.Module m) => (Linear)(m is TunerLayer t ? t.base_layer : m);
        var w = Of(linears[0].Module).weight!;
        var (a, b) = Projections(c.Rank, linears.Max(l => Of(l.Module).in_features), linears.Max(l => Of(l.Module).out_features), c.ProjectionPrngKey);
        a = a.to(w.dtype, w.device); b = b.to(w.dtype, w.device);
        foreach (var (path, current) in linears)
        {
            var layer = current as VeraLayer ?? new VeraLayer((Linear)current);
            layer.AddAdapter(adapter, a, b, c);
            if (!ReferenceEquals(layer, current)) ModuleTree.Replace(model, path, layer);
        }
        made.AddOrUpdate(config, Tuple.Create(a, b));
    }

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report) =>
        made.TryGetValue(config, out var ab) ? new Shared(ab.Item1, ab.Item2, ((VeraConfig)config).SaveProjection) : new AttachedAdapter();

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new VeraConfig
        {
            Targets = json.StrList("target_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            Rank = json.Int("r", 1) ?? 256,
            ProjectionPrngKey = (int)(json.Num("projection_prng_key") ?? 0),
            SaveProjection = json["save_projection"] is null || json.Bool("save_projection"),
            DInitial = json.Num("d_initial") ?? 0.1,
            Dropout = json.Num("vera_dropout") ?? 0,
            InitWeights = json["init_weights"] is null || json.Bool("init_weights"),
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (VeraConfig)config;
        var o = Header();
        o["r"] = c.Rank;
        o["target_modules"] = TargetsJson(c.Targets);
        o["projection_prng_key"] = c.ProjectionPrngKey;
        o["save_projection"] = c.SaveProjection;
        o["vera_dropout"] = c.Dropout;
        o["d_initial"] = c.DInitial;
        o["fan_in_fan_out"] = false;
        o["bias"] = BiasJson(BiasMode.None);
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["init_weights"] = c.InitWeights;
        o["layers_to_transform"] = null;
        o["layers_pattern"] = null;
        return o;
    }
}
