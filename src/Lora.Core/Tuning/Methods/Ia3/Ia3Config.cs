namespace Lora.Core.Tuning;

/// (IA)³ (Liu et al. 2022), as PEFT's IA3Config: a learned vector rescales each target's output,
/// or, for the <see cref="FeedforwardModules"/>, its input.
public sealed record Ia3Config : TuningConfig
{
    public override TuningMethod Method => Ia3Method.Instance;

    /// feedforward_modules: targets whose input is scaled (PEFT: a subset of target_modules).
    public IReadOnlyList<string> FeedforwardModules { get; init; } = Array.Empty<string>();

    /// init_ia3_weights: start the vectors at one (the base model); false draws them N(0, 1) as PEFT does.
    public bool InitIa3Weights { get; init; } = true;

    protected override string DescribeMethod() =>
        FeedforwardModules.Count == 0 ? "(IA)³" : $"(IA)³ (input scaled on {string.Join(", ", FeedforwardModules)})";

    public bool IsFeedforward(string path) => FeedforwardModules.Any(p => ModulePattern.Matches(p, path));

    protected override void Check(List<string> errors)
    {
        if (Targets.Count == 0) errors.Add("Targets is empty: (IA)³ needs at least one target module pattern (e.g. \"qkv\", \"fc2\")");
        if (Bias != BiasMode.None) errors.Add("Bias does not apply to (IA)³ (PEFT's IA3Config has no bias option)");
        // PEFT's IA3Config: feedforward_modules must be a subset of target_modules (as written)
        if (!Targets.Any(ModulePattern.IsRegex))
            foreach (var f in FeedforwardModules.Where(f => !Targets.Contains(f)))
                errors.Add($"FeedforwardModules entry '{f}' is not among Targets (PEFT requires feedforward_modules ⊆ target_modules)");
    }

    protected override IEnumerable<string> Patterns() => base.Patterns().Concat(FeedforwardModules);
}
