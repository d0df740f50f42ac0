using Lora.Conversion;
using Lora.Core.Tuning;
using Lora.CommandLine;
using Lora.Dsl;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora summary MODEL --method M --rank R --targets a,b ...`: the tfimm-style parameter summary
/// (total, trainable, non-trainable, per group) and the tuned modules, grouped. The method goes
/// through the spec's vocabulary and conversion (<see cref="SummaryMethod"/>), as a run's does. The
/// model is built on the meta device, so even ViT-L or SAM-H costs no memory.
public static class SummaryCommand
{
    public static int Run(SummaryOptions o, TextWriter stdout, TextWriter stderr)
    {
        var args = ModelSource.Args(o.ModelConfig, o.Classes);
        using var model = ModelSource.Create(o.Model, args, META);
        var converted = SummaryMethod.toCore(o, model);
        if (converted.IsError) return Bad(stderr, converted.ErrorValue);
        var method = converted.ResultValue;
        var errors = ToCore.check(method, model);
        if (!errors.IsEmpty) return Bad(stderr, string.Join("; ", errors));
        var tuned = ToCore.apply(method, model);
        var summary = tuned?.Summary() ?? ParameterSummary.Of(model);
        stdout.WriteLine($"Model: {o.Model} ({model.GetType().Name}), {method.Describe()}");
        stdout.Write(summary.ToString());
        return 0;
    }

    static int Bad(TextWriter stderr, string message)
    {
        stderr.WriteLine($"lora summary: {message}");
        return 2;
    }
}
