namespace Lora.Core.Tuning;

/// What a method that tunes every fitting module when given no targets (BitFit, LN tuning, SSF)
/// attaches: its checkpoint names the modules it tuned, so that PEFT (which has no default targets
/// for these models) and a later load tune exactly those.
sealed class NamedTargets(IReadOnlyList<string> paths) : AttachedAdapter
{
    public static NamedTargets Of(MatchReport report) => new(report.Targets.Select(t => t.Path).ToList());

    public override TuningConfig ConfigToSave(TuningConfig config) => config.Targets.Count > 0 ? config : config with { Targets = paths };
}
