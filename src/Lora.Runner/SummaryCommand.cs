using System.Globalization;
using Lora.Core.Tuning;
using Lora.Dsl;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Runner;

/// `lora summary MODEL --method M --rank R --targets a,b ...`: the tfimm-style parameter summary
/// (total, trainable, non-trainable, per group) and the tuned modules, grouped. The model is built
/// on the meta device, so even ViT-L or SAM-H costs no memory.
public static class SummaryCommand
{
    public static int Run(SummaryOptions o, TextWriter stdout, TextWriter stderr)
    {
        var args = ModelSource.Args(o.ModelConfig, o.Classes);
        var method = o.Method.ToLowerInvariant();
        using var model = ModelSource.Create(o.Model, args, META);
        var train = o.Train.ToList();
        if (method is "full" or "head" && (o.Targets.Length > 0 || o.Rank.HasValue || o.InitRank.HasValue))
            return Bad(stderr, $"--method {method} adds no adapters: drop --targets, --rank and --init-rank");
        string description;
        ParameterSummary summary;
        switch (method)
        {
            case "full":   // a fresh model: every parameter trainable
                summary = ParameterSummary.Of(model);
                description = "full fine-tuning";
                break;
            case "head":
                var heads = train.Count > 0 ? train : new List<string> { Lora.Core.Models.Zoo.Classifier(model) };
                var trained = FreezeAllBut(model, heads);
                if (trained == 0) return Bad(stderr, $"no parameter of {o.Model} is under {string.Join(", ", heads)}; name the classifier with --train");
                summary = ParameterSummary.Of(model);
                description = $"head only ({string.Join(", ", heads)})";
                break;
            default:
                var config = Config(o, method, train, out var error);
                if (config is null) return Bad(stderr, error!);
                var report = Tuner.Match(model, config);
                if (report.Errors.Count > 0) return Bad(stderr, string.Join("; ", report.Errors));
                summary = Tuner.Apply(model, config).Summary();
                description = Describe(config);
                break;
        }
        stdout.WriteLine($"Model: {o.Model} ({model.GetType().Name}), {description}");
        stdout.Write(summary.ToString());
        return 0;
    }

    static int Bad(TextWriter stderr, string message)
    {
        stderr.WriteLine($"lora summary: {message}");
        return 2;
    }

    static long FreezeAllBut(nn.Module model, IReadOnlyList<string> modules)
    {
        long trained = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            var path = name[..Math.Max(0, name.LastIndexOf('.'))];
            p.requires_grad = modules.Any(m => ModulePattern.Matches(m, path) || path.StartsWith(m + ".", StringComparison.Ordinal) || path.Contains("." + m + ".", StringComparison.Ordinal));
            if (p.requires_grad) trained += p.numel();
        }
        return trained;
    }

    static TuningConfig? Config(SummaryOptions o, string method, List<string> train, out string? error)
    {
        error = null;
        TuningMethod m;
        switch (method)
        {
            case "lora": m = TuningMethod.Lora; break;
            case "dora": m = TuningMethod.Dora; break;
            case "adalora": m = TuningMethod.AdaLora; break;
            case "adapter": m = TuningMethod.Adapter; break;
            default: error = $"--method must be one of full, head, lora, dora, adalora, adapter; got '{o.Method}'"; return null;
        }
        var targets = o.Targets.ToList();
        if (m == TuningMethod.Adapter && targets.Count > 0)
        {
            error = "the adapter method takes no --targets: it adds a bottleneck to every transformer block (--rank sets its width, default 0.25 × the block's)";
            return null;
        }
        if (m != TuningMethod.Adapter && targets.Count == 0) { error = $"{method} needs --targets (e.g. --targets qkv or --targets fc1,fc2)"; return null; }
        if (o.InitRank.HasValue && m != TuningMethod.AdaLora) { error = "--init-rank applies to adalora only"; return null; }
        var bias = o.Bias switch
        {
            "none" => BiasMode.None,
            "lora_only" => BiasMode.LoraOnly,
            "all" => BiasMode.All,
            _ => (BiasMode?)null,
        };
        if (bias is null) { error = $"--bias must be none, lora_only or all; got '{o.Bias}'"; return null; }
        var rank = o.Rank ?? 8;
        var config = new TuningConfig
        {
            Method = m,
            Targets = targets,
            Rank = rank,
            Alpha = o.Alpha ?? 2.0 * rank,
            Bias = bias.Value,
            ModulesToSave = train,
            InitRank = o.InitRank ?? TuningConfig.DefaultInitRank(rank),
            TargetRank = rank,
            AdapterWidth = m == TuningMethod.Adapter ? o.Rank ?? 0 : 0,
        };
        try { config.Validate(); }
        catch (ArgumentException e) { error = e.Message; return null; }
        return config;
    }

    static string Describe(TuningConfig c)
    {
        string F(double x) => x.ToString("0.###", CultureInfo.InvariantCulture);
        var what = c.Method switch
        {
            TuningMethod.AdaLora => $"AdaLoRA init_r={c.InitRank} target_r={c.TargetRank} alpha={F(c.Alpha)}",
            TuningMethod.Adapter => c.AdapterWidth > 0 ? $"Adapter width={c.AdapterWidth}" : $"Adapter ratio={F(c.AdapterRatio)}",
            _ => $"{(c.Method == TuningMethod.Dora ? "DoRA" : "LoRA")} r={c.Rank} alpha={F(c.Alpha)}",
        };
        if (c.Targets.Count > 0) what += $" on {string.Join(", ", c.Targets)}";
        if (c.ModulesToSave.Count > 0) what += $", training {string.Join(", ", c.ModulesToSave)}";
        if (c.Bias != BiasMode.None) what += $", bias {(c.Bias == BiasMode.All ? "all" : "lora_only")}";
        return what;
    }
}
