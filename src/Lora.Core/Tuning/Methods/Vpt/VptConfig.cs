namespace Lora.Core.Tuning;

/// VPT (Jia et al. 2022): learned prompt tokens in a ViT-style encoder implementing
/// <see cref="IPromptHost"/>, shallow (inserted once, before the first block) or deep (new tokens
/// before every block). Not a PEFT method (PEFT's issue #1563 closed unimplemented): saved with
/// peft_type "VPT". Not mergeable: it lengthens the token sequence.
public sealed record VptConfig : TuningConfig
{
    public override TuningMethod Method => VptMethod.Instance;

    /// The number of prompt tokens (the paper's 1 to 200).
    public int Tokens { get; init; } = 10;

    /// Deep VPT: prompts before every block, not only the first.
    public bool Deep { get; init; }

    protected override string DescribeMethod() => $"VPT-{(Deep ? "deep" : "shallow")} tokens={Tokens}";

    protected override void Check(List<string> errors)
    {
        if (Tokens <= 0 || Tokens > 1024) errors.Add($"Tokens must be in 1..1024, got {Tokens}");
        if (Targets.Count > 0) errors.Add("Targets does not apply to VPT (it prompts the encoder implementing IPromptHost)");
        if (Bias != BiasMode.None) errors.Add("Bias is not supported with VPT");
    }
}
