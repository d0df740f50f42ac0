using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// (IA)³ on Linear and Conv2d layers, as PEFT's IA3Model.
public sealed class Ia3Method : TuningMethod
{
    public static readonly Ia3Method Instance = new();

    Ia3Method() { }

    public override string Name => "(IA)³";
    public override string PeftType => "IA3";

    /// The targets, and every feed-forward pattern must name one of them (PEFT: feedforward_modules ⊆ target_modules).
    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        MatchPatterns(model, modules, config, matches, errors);
        foreach (var p in ((Ia3Config)config).FeedforwardModules)
            if (!matches.Any(m => m.Role == "target" && ModulePattern.Matches(p, m.Path)))
                errors.Add($"feedforward_modules pattern '{p}' matches no target module (feed-forward modules must be targets too)");
    }

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) => module switch
    {
        Linear => null,
        Conv2d c when c.transposed => $"'{path}' is a transposed convolution, which (IA)³ does not support",
        Conv2d c when c.groups != 1 && ((Ia3Config)config).IsFeedforward(path) =>
            $"'{path}' is a grouped Conv2d (groups={c.groups}): (IA)³ can scale its output, not its input; drop it from feedforward_modules",
        Conv2d => null,
        _ => $"'{path}' is a {module.GetType().Name}, which (IA)³ cannot tune (supported: Linear and Conv2d); narrow the pattern",
    };

    protected override TunerLayer CreateLayer(nn.Module module, string path) =>
        throw new InvalidOperationException("(IA)³ layers are made with their feed-forward flag");

    public override void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report)
    {
        var c = (Ia3Config)config;
        foreach (var m in report.Targets)
        {
            var current = ModuleTree.Get(model, m.Path);
            var ff = c.IsFeedforward(m.Path);
            var layer = current as Ia3Layer ?? new Ia3Layer((nn.Module<Tensor, Tensor>)current, ff);
            if (layer.IsFeedforward != ff)
                throw new ArgumentException($"'{m.Path}' already carries an (IA)³ adapter that scales its {(layer.IsFeedforward ? "input" : "output")}; a second one must too");
            layer.AddAdapter(adapter, c.InitIa3Weights);
            if (!ReferenceEquals(layer, current)) ModuleTree.Replace(model, m.Path, layer);
        }
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new Ia3Config
        {
            Targets = json.StrList("target_modules"),
            FeedforwardModules = json.StrList("feedforward_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            InitIa3Weights = json["init_ia3_weights"] is null || json.Bool("init_ia3_weights"),
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (Ia3Config)config;
        var o = Header();
        o["target_modules"] = TargetsJson(c.Targets);
        o["exclude_modules"] = null;
        // PEFT: a list, or (with a regex target_modules) a regex string
        o["feedforward_modules"] = c.FeedforwardModules.Count == 0 ? new JsonArray() : TargetsJson(c.FeedforwardModules);
        o["fan_in_fan_out"] = false;
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        o["init_ia3_weights"] = c.InitIa3Weights;
        return o;
    }
}
