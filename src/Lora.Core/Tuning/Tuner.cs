using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Tuning;

/// One module a configuration touches: a target (replaced by a tuning layer), a module to save
/// (wrapped: "modules_to_save", or trained in place: "in_place"), or a block that hosts bottleneck adapters.
public sealed record ModuleMatch(string Path, string Role, string ModuleType, string Pattern);

/// What a configuration would do to a model, and every problem found, without changing it.
/// <see cref="Unmatched"/> lists the Linear and Conv2d layers no pattern reached (to help write patterns).
public sealed record MatchReport(IReadOnlyList<ModuleMatch> Matches, IReadOnlyList<string> Errors, IReadOnlyList<string> Unmatched)
{
    public IEnumerable<ModuleMatch> Targets => Matches.Where(m => m.Role == "target");
    public IEnumerable<ModuleMatch> ModulesToSave => Matches.Where(m => m.Role == "modules_to_save");
    /// Modules to save that no wrapper can stand in for: their own parameters train.
    public IEnumerable<ModuleMatch> TrainedInPlace => Matches.Where(m => m.Role == "in_place");
    public IEnumerable<ModuleMatch> AdapterHosts => Matches.Where(m => m.Role == "adapter_host");
}

/// The entry point: applies a <see cref="TuningConfig"/> to any TorchSharp module tree.
public static class Tuner
{
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<nn.Module, TunedModel> tuned = new();

    /// Applies the configuration under the adapter name (PEFT's default is "default"): replaces the
    /// targets by tuning layers, wraps the modules to save (or trains them in place, see
    /// TuningConfig.ModulesToSave), freezes everything else. A model that is
    /// already tuned gets one more adapter (not active until <see cref="TunedModel.SetActiveAdapter"/>).
    public static TunedModel Apply(nn.Module model, TuningConfig config, string adapterName = "default")
    {
        TunedModel t;
        lock (tuned)
        {
            if (!tuned.TryGetValue(model, out t!)) { t = new TunedModel(model); tuned.Add(model, t); }
        }
        t.AddAdapter(adapterName, config);
        return t;
    }

    internal static void Forget(nn.Module model) { lock (tuned) tuned.Remove(model); }

    /// Lists the modules the configuration matches and every problem (a pattern matching nothing,
    /// an unsupported layer type, a rank too large), without changing the model.
    public static MatchReport Match(nn.Module model, TuningConfig config)
    {
        config.Validate();
        var matches = new List<ModuleMatch>();
        var errors = new List<string>();
        var modules = ModuleTree.Descendants(model).ToList();

        if (config.Method == TuningMethod.Adapter)
        {
            foreach (var (path, m) in modules)
                if (m is IAdapterHost) matches.Add(new(path, "adapter_host", m.GetType().Name, ""));
            if (matches.Count == 0)
                errors.Add($"the Adapter method found no block implementing IAdapterHost in this {model.GetType().Name}");
        }
        else
        {
            foreach (var pattern in config.Targets)
            {
                var hit = modules.Where(m => ModulePattern.Matches(pattern, m.Path)).ToList();
                if (hit.Count == 0) { errors.Add($"target pattern '{pattern}' matches no module of this {model.GetType().Name}"); continue; }
                foreach (var (path, m) in hit)
                {
                    if (matches.Any(x => x.Path == path)) continue;
                    var inner = m is TunerLayer tl ? tl.base_layer : m;
                    matches.Add(new(path, "target", inner.GetType().Name, pattern));
                    var check = CheckTarget(path, inner, config);
                    if (check is not null) errors.Add(check);
                    else if (m is not TunerLayer && ModuleTree.CannotReplace(model, path, typeof(TunerLayer)) is { } why) errors.Add(why);
                    if (m is TunerLayer existing && !Compatible(existing, config.Method))
                        errors.Add($"'{path}' already carries a {existing.Method} layer; a {config.Method} adapter cannot be added beside it");
                }
            }
        }
        foreach (var pattern in config.ModulesToSave)
        {
            var hit = modules.Where(m => ModulePattern.Matches(pattern, m.Path)).ToList();
            if (hit.Count == 0) errors.Add($"modules_to_save pattern '{pattern}' matches no module");
            foreach (var (path, m) in hit)
            {
                if (matches.Any(x => x.Path == path && x.Role == "target")) errors.Add($"'{path}' is both a target and a module to save");
                bool wrap = m is ModulesToSaveWrapper
                    || ModulesToSaveWrapper.CanWrap(m) && ModuleTree.CannotReplace(model, path, typeof(ModulesToSaveWrapper)) is null;
                if (!wrap && matches.FirstOrDefault(x => x.Role is "target" or "adapter_host" && x.Path.StartsWith(path + ".", StringComparison.Ordinal)) is { } inner)
                    errors.Add($"'{path}' is trained in place as a module to save but holds the {inner.Role.Replace('_', ' ')} '{inner.Path}'; save a module without tuned layers in it");
                matches.Add(new(path, wrap ? "modules_to_save" : "in_place", m.GetType().Name, pattern));
            }
        }
        foreach (var p in config.RankPattern.Keys.Concat(config.AlphaPattern.Keys))
            if (!matches.Any(m => m.Role == "target" && ModulePattern.Matches(p, m.Path)))
                errors.Add($"rank/alpha pattern '{p}' matches no target module");
        var unmatched = modules.Where(m => m.Module is Linear or Conv2d && !matches.Any(x => x.Path == m.Path)).Select(m => m.Path).ToList();
        return new MatchReport(matches, errors, unmatched);
    }

    static bool Compatible(TunerLayer layer, TuningMethod method) => (layer, method) switch
    {
        (AdaLoraLinear, TuningMethod.AdaLora) => true,
        (LoraLinear, TuningMethod.Lora or TuningMethod.Dora) => true,
        (LoraConv2d, TuningMethod.Lora or TuningMethod.Dora) => true,
        _ => false,
    };

    internal static int RankFor(TuningConfig c, string path) =>
        c.Method == TuningMethod.AdaLora ? c.InitRank
        : c.RankPattern.FirstOrDefault(kv => ModulePattern.Matches(kv.Key, path)) is { Key: not null } kv ? kv.Value : c.Rank;

    internal static double AlphaFor(TuningConfig c, string path) =>
        c.AlphaPattern.FirstOrDefault(kv => ModulePattern.Matches(kv.Key, path)) is { Key: not null } kv ? kv.Value : c.Alpha;

    static string? CheckTarget(string path, nn.Module m, TuningConfig c)
    {
        var r = RankFor(c, path);
        switch (c.Method, m)
        {
            case (TuningMethod.Lora or TuningMethod.Dora or TuningMethod.AdaLora, Linear l):
                var max = Math.Min(l.in_features, l.out_features);
                return r > max ? $"rank {r} for '{path}' exceeds min(in_features, out_features) = {max} of Linear({l.in_features}, {l.out_features})" : null;
            case (TuningMethod.Lora or TuningMethod.Dora, Conv2d conv):
                var maxc = Math.Min(conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] / conv.groups, conv.out_channels);
                if (conv.transposed) return $"'{path}' is a transposed convolution, which LoRA does not support";
                if (r % conv.groups != 0) return $"rank {r} for '{path}' must be a multiple of the Conv2d's groups ({conv.groups})";
                return r > Math.Max(maxc, conv.groups) ? $"rank {r} for '{path}' exceeds min(in_channels·kh·kw/groups, out_channels) = {maxc}" : null;
            default:
                var supported = c.Method switch
                {
                    TuningMethod.Lora or TuningMethod.Dora => "Linear and Conv2d",
                    _ => "Linear",
                };
                return $"'{path}' is a {m.GetType().Name}, which {c.Method} cannot tune (supported: {supported}); narrow the pattern";
        }
    }
}
