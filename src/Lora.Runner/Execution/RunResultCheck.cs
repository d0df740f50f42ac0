namespace Lora.Runner;

/// A result whose numbers are not finite is a failure of that run, explained, not a metrics.json
/// (JSON has no NaN: writing one would crash the whole plan and leave weights without a result).
public static class RunResultCheck
{
    public static void RequireFinite(RunResult r)
    {
        foreach (var (name, value) in r.Metrics.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            if (!double.IsFinite(value))
                throw new InvalidDataException($"the final {name} is {value}: the run produced no usable result (diverged, or an empty or degenerate validation set); lower the learning rate or check the data");
        foreach (var c in r.Curve)
            foreach (var (name, value) in new[] { ("training loss", (double?)c.TrainLoss), ("validation loss", c.ValLoss), ("validation metric", c.ValMetric) })
                if (value is { } v && !double.IsFinite(v))
                    throw new InvalidDataException($"the {name} is {v} at epoch {c.Epoch} (step {c.Step}): the model diverged; lower the learning rate or check the data");
        if (!double.IsFinite(r.TrainSeconds)) throw new InvalidDataException($"the training time is {r.TrainSeconds}");
    }
}
