using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// FacT on the target Linears of a model whose targets share one width d (the ViT family; SAM's ViT
/// encoder with targets [qkv, proj, lin1, lin2]): the shared factors go on the root as `fact`, each
/// target gets a <see cref="FactLayer"/>; Tucker's P columns are handed out in target order (a ViT
/// block: q, k, v, proj, fc1 ×4, fc2 ×4, the reference's 12 per block).
public sealed class FactMethod : TuningMethod
{
    public static readonly FactMethod Instance = new();

    /// The root child holding the shared factors.
    public const string SharedName = "fact";

    FactMethod() { }

    public override string Name => "FacT";
    public override string PeftType => "FACT";
    public override string? OnePerModel => "a model can carry only one set of FacT factors (they live on the model's root)";

    public override string NameOf(TuningConfig config) => ((FactConfig)config).Variant == FactVariant.Tt ? "FacT-TT" : "FacT-TK";

    const string WhereItFits =
        @"it fits the ViT family, and SAM's ViT encoder with targets [qkv, attn.proj, re:image_encoder\.blocks\.\d+\.mlp\.lin[12]]; not TinyViT, whose stages differ in width, nor ConvNeXt, ResNet or UNet: use lora there";

    // a layer of the right kind is not enough: every target must be made of slices of one width
    protected override string WouldFit(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config) => "; " + WhereItFits;

    protected override string? CheckTarget(string path, nn.Module module, TuningConfig config) => module switch
    {
        Linear => null,
        _ => $"'{path}' is a {module.GetType().Name}, which FacT cannot tune (supported: Linear); narrow the pattern",
    };

    /// d: the narrowest side of the targets (the residual stream's width).
    static long WidthOf(IEnumerable<Linear> ls) => ls.Min(l => Math.Min(l.in_features, l.out_features));

    public override void MatchTargets(nn.Module model, IReadOnlyList<(string Path, nn.Module Module)> modules, TuningConfig config,
                                      List<ModuleMatch> matches, List<string> errors)
    {
        MatchPatterns(model, modules, config, matches, errors);
        var linears = matches.Where(m => m.Role == "target")
            .Select(m => (m.Path, L: Unwrap(ModuleTree.Get(model, m.Path)) as Linear)).Where(x => x.L is not null).ToList();
        if (linears.Count == 0 || errors.Count > 0) return;
        var d = WidthOf(linears.Select(x => x.L!));
        var misfits = linears.Where(x => Math.Min(x.L!.in_features, x.L.out_features) != d || Math.Max(x.L.in_features, x.L.out_features) % d != 0).ToList();
        if (misfits.Count > 0)
        {
            var (path, l) = misfits[0];
            errors.Add($"FacT shares U and V across layers of one width: '{path}' is Linear({l!.in_features}, {l.out_features}), not made of {d}×{d} slices" +
                       (misfits.Count > 1 ? $" (and {misfits.Count - 1} more targets)" : "") + "; " + WhereItFits);
        }
        if (modules.Any(m => m.Path == SharedName)) errors.Add($"the model already has a child named '{SharedName}' (FacT's shared factors)");
    }

    static nn.Module Unwrap(nn.Module m) => m is TunerLayer t ? t.base_layer : m;

    public override void Inject(nn.Module model, string adapter, TuningConfig config, MatchReport report)
    {
        var c = (FactConfig)config;
        var targets = report.Targets.Select(m => (m.Path, Module: ModuleTree.Get(model, m.Path))).ToList();
        var linears = targets.Select(t => (Linear)Unwrap(t.Module)).ToList();
        var d = WidthOf(linears);
        var w = linears[0].weight!;
        var slices = linears.Sum(l => FactLayer.SliceCount(l, d));
        var factors = new FactFactors(d, c.Rank, c.Variant, slices, w.dtype, w.device);
        model.register_module(SharedName, factors);
        var offset = 0;
        foreach (var (path, current) in targets)
        {
            var layer = current as FactLayer ?? new FactLayer((Linear)current);
            layer.AddAdapter(adapter, factors, c, offset);
            offset += FactLayer.SliceCount(layer.Base, d);
            if (!ReferenceEquals(layer, current)) ModuleTree.Replace(model, path, layer);
        }
    }

    public override AttachedAdapter Attach(TunedModel model, string adapter, TuningConfig config, MatchReport report) =>
        new Shared(model.Model, (FactFactors)ModuleTree.Get(model.Model, SharedName));

    sealed class Shared(nn.Module root, FactFactors factors) : AttachedAdapter
    {
        public override IEnumerable<Parameter> Parameters() => factors.Named().Select(x => x.Value);

        public override IEnumerable<(string Key, Tensor Value)> Tensors() =>
            factors.Named().Select(x => ($"{SharedName}.{x.Name}", (Tensor)x.Value));

        public override void Detach() => root.register_module(SharedName, null!);
    }

    public override (TuningConfig Config, IReadOnlyDictionary<string, bool[]>? RankPattern) ReadConfig(AdapterConfigReader json) =>
        (new FactConfig
        {
            Targets = json.StrList("target_modules"),
            ModulesToSave = json.StrList("modules_to_save"),
            Rank = json.Int("r", 1) ?? 8,
            Variant = json["fact_type"]?.GetValue<string>() switch
            {
                null or "tt" => FactVariant.Tt,
                "tk" => FactVariant.Tk,
                var v => throw new InvalidDataException($"fact_type must be tt or tk, got '{v}'"),
            },
            Scale = json.Num("scale") ?? 1.0,
            Dropout = json.Num("dropout") ?? 0.1,
        }, null);

    public override JsonObject WriteConfig(TuningConfig config, IReadOnlyDictionary<string, bool[]>? rankPattern, string adapter)
    {
        var c = (FactConfig)config;
        var o = Header();
        o["target_modules"] = TargetsJson(c.Targets);
        o["modules_to_save"] = ListJson(c.ModulesToSave);
        // the reference code's set_FacT(model, dim, s) and its fact_tt.py / fact_tk.py
        o["r"] = c.Rank;
        o["fact_type"] = c.Variant == FactVariant.Tt ? "tt" : "tk";
        o["scale"] = c.Scale;
        o["dropout"] = c.Dropout;
        return o;
    }
}
