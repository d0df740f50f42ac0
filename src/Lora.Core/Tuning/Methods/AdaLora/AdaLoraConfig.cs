namespace Lora.Core.Tuning;

/// AdaLoRA's configuration: LoRA's fields plus PEFT AdaLoraConfig's schedule (init_r, target_r,
/// tinit, tfinal, deltaT, beta1, beta2, orth_reg_weight, total_step). Rank and RankPattern do not
/// apply: the rank allocator chooses the ranks.
public sealed record AdaLoraConfig : LoraConfig
{
    public override TuningMethod Method => AdaLoraMethod.Instance;

    public override string MethodName => "AdaLoRA";

    /// init_r: the initial rank of every layer.
    public int InitRank { get; init; } = 12;

    /// target_r: the average rank per layer at the end of the schedule.
    public int TargetRank { get; init; } = 8;

    protected override string DescribeMethod() => $"AdaLoRA init_r={InitRank} target_r={TargetRank} alpha={F(Alpha)}";

    /// beta1: EMA coefficient of the importance.
    public double Beta1 { get; init; } = 0.85;

    /// beta2: EMA coefficient of the uncertainty.
    public double Beta2 { get; init; } = 0.85;

    /// tinit: steps of warm-up before the budget starts to shrink.
    public int TInit { get; init; }

    /// tfinal: steps at the end with the final budget fixed.
    public int TFinal { get; init; }

    /// deltaT: the allocator masks every DeltaT steps.
    public int DeltaT { get; init; } = 1;

    /// orth_reg_weight: weight of the orthogonal regulariser added to the loss (PEFT rejects 0).
    public double OrthRegWeight { get; init; } = 0.5;

    /// total_step: the total number of training steps; 0 lets the training loop set it (IStepHook.Begin).
    public long TotalStep { get; init; }

    protected override void CheckRank(List<string> errors)
    {
        if (InitRank <= 0) errors.Add($"InitRank must be positive, got {InitRank}");
        if (TargetRank <= 0 || TargetRank > InitRank) errors.Add($"TargetRank must be in 1..InitRank ({InitRank}), got {TargetRank}");
        if (Beta1 is < 0 or >= 1 || Beta2 is < 0 or >= 1) errors.Add($"Beta1 and Beta2 must be in [0, 1), got {Beta1} and {Beta2}");
        if (DeltaT <= 0) errors.Add($"DeltaT must be positive, got {DeltaT}");
        if (OrthRegWeight <= 0) errors.Add($"OrthRegWeight must be positive (PEFT rejects 0), got {OrthRegWeight}");
        if (UseRsLora) errors.Add("UseRsLora does not apply to AdaLoRA");
        if (Variant != LoraVariant.Plain) errors.Add($"{Variant.Name} does not apply to AdaLoRA");
        if (RankPattern.Count > 0) errors.Add("RankPattern does not apply to AdaLoRA: the rank allocator chooses the ranks");
    }
}
