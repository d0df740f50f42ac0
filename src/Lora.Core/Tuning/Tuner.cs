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

        config.Method.MatchTargets(model, modules, config, matches, errors);
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
        var unmatched = modules.Where(m => m.Module is Linear or Conv2d && !matches.Any(x => x.Path == m.Path)).Select(m => m.Path).ToList();
        return new MatchReport(matches, errors, unmatched);
    }
}
