namespace Lora.CommandLine

open System
open Argu

/// The `lora` command line (Argu): one union per subcommand, Usage on every case.
module Cli =
    /// Usage texts that several commands' options share (the adapter options, --run, --results).
    module private Usage =
        let weight = "the weight of the --adapter at the same position (one per adapter; default 1)"
        let combination = "how several adapters combine: cat (default; exact Σ wᵢ·ΔWᵢ), linear or svd (PEFT's add_weighted_adapter)"
        let svdRank = "the rank of an svd combination (default: the largest source rank)"
        let svdClamp = "svd: clamp both factors to ± this quantile of their entries (PEFT's svd_clamp)"
        let fromRun = "a finished run (its hash or results/HASH folder): model, weights and adapter from its model card"
        let results = "the results folder a --run hash is looked up in (default: results)"

    type ValidateArgs =
        | [<MainCommand; ExactlyOnce>] Spec of spec: string
        interface IArgParserTemplate with
            member a.Usage = match a with Spec _ -> "the experiment spec (.yaml, .yml or .fsx)"

    type PlanArgs =
        | [<MainCommand; ExactlyOnce>] Spec of spec: string
        | Results of dir: string
        | Json
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Spec _ -> "the experiment spec (.yaml, .yml or .fsx)"
                | Results _ -> "the results folder (default: results)"
                | Json -> "print a JSON array (hash, name, dependsOn, status per run) instead of a table"

    type RunArgs =
        | [<MainCommand; ExactlyOnce>] Spec of spec: string list
        | Results of dir: string
        | Device of device: string
        | Only of pattern: string
        | Shard of shard: string
        | Force
        | Write_Tables of dir: string
        | Verify
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Write_Tables _ -> "afterwards, regenerate the tables and curves from the results folder into this folder (e.g. paper-tables)"
                | Spec _ -> "one or more experiment specs (.yaml, .yml or .fsx), run as one plan"
                | Results _ -> "the results folder (default: results)"
                | Device _ -> "cpu or cuda: overrides the spec's device (not part of the run's hash)"
                | Only _ -> "run only runs whose id (experiment/name) or hash matches this pattern (* and ? wildcards)"
                | Shard _ -> "I/N: run only the I-th of N interleaved shards of the pending runs (I from 0)"
                | Force -> "run again even if a result exists"
                | Verify -> "recompute every committed result (and its base runs) into a scratch folder and check each equals the committed one bit for bit (exit 1 on a difference); --write-tables then writes the recomputed results' tables"

    type TablesArgs =
        | Results of dir: string
        | Out of dir: string
        | Spec of spec: string
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Results _ -> "the results folder (default: results)"
                | Out _ -> "where the tables and plots go (default: paper-tables)"
                | Spec _ -> "a spec whose experiments' declared tables (tables:) replace their default layout; repeatable"

    type SummaryArgs =
        | [<MainCommand; ExactlyOnce>] Model of model: string
        | Method of method: string
        | Rank of rank: int
        | Alpha of alpha: float
        | Targets of modules: string list
        | Train of modules: string list
        | Bias of bias: string
        | Init_Rank of rank: int
        | Classes of count: int
        | Model_Config of path: string
        | Init of init: string
        | Fused_Qkv of parts: string list
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Model _ -> "a zoo model name"
                | Method _ -> "full, head, lora, dora, adalora, adapter, bitfit, ln_tuning, ia3, ssf, loha, lokr, vera, adaptformer, vpt, vpt_deep, convpass, fact, fact_tk, oft, boft or hra (default lora)"
                | Rank _ -> "the rank (or adapter bottleneck width)"
                | Alpha _ -> "lora_alpha (default 2 × rank)"
                | Targets _ -> "target modules (names, dotted suffixes or regular expressions)"
                | Train _ -> "modules trained in full beside the adapters (modules_to_save)"
                | Bias _ -> "none, lora_only or all"
                | Init_Rank _ -> "AdaLoRA's initial rank"
                | Classes _ -> "number of classes of the head"
                | Model_Config _ -> "a JSON file of model options (img_size, patch_size, ...)"
                | Init _ -> "LoRA's init: default, gaussian, pissa, pissa_niter_K or olora (lora, dora)"
                | Fused_Qkv _ -> "q/v-only LoRA on fused qkv Linears: the parts adapted, e.g. q,v (lora)"

    type MergeArgs =
        | Model of model: string
        | [<CustomCommandLine("--run")>] From_Run of run: string
        | Results of dir: string
        | Model_Config of path: string
        | Weights of path: string
        | Adapter of path: string
        | [<Mandatory>] Out of path: string
        | Weight of weight: float
        | Combination of kind: string
        | Svd_Rank of rank: int
        | Svd_Clamp of quantile: float
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | From_Run _ -> Usage.fromRun
                | Results _ -> Usage.results
                | Model _ -> "a zoo model name"
                | Model_Config _ -> "a JSON file of model options"
                | Weights _ -> "the base model's safetensors file"
                | Adapter _ -> "the adapter folder or safetensors file (repeat for several, combined with --weight)"
                | Out _ -> "the merged safetensors file to write"
                | Weight _ -> Usage.weight
                | Combination _ -> Usage.combination
                | Svd_Rank _ -> Usage.svdRank
                | Svd_Clamp _ -> Usage.svdClamp

    type ForwardArgs =
        | Model of model: string
        | [<CustomCommandLine("--run")>] From_Run of run: string
        | Results of dir: string
        | Model_Config of path: string
        | Weights of path: string
        | Adapter of path: string
        | [<Mandatory>] Input of path: string
        | [<Mandatory>] Out of path: string
        | Weight of weight: float
        | Combination of kind: string
        | Svd_Rank of rank: int
        | Svd_Clamp of quantile: float
        | Disable_Adapter
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Model _ -> "a zoo model name or an .onnx file"
                | From_Run _ -> Usage.fromRun
                | Results _ -> Usage.results
                | Model_Config _ -> "a JSON file of model options (num_classes, ...)"
                | Weights _ -> "the model's safetensors file"
                | Adapter _ -> "an adapter folder to apply (repeat for several, combined with --weight)"
                | Weight _ -> Usage.weight
                | Combination _ -> Usage.combination
                | Svd_Rank _ -> Usage.svdRank
                | Svd_Clamp _ -> Usage.svdClamp
                | Disable_Adapter -> "load the adapters, then disable them: the base model's output (a check)"
                | Input _ -> "a safetensors file with the tensor 'input'"
                | Out _ -> "the safetensors file to write, with the tensor 'output' (fp32)"

    type ExportArgs =
        | Model of model: string
        | [<CustomCommandLine("--run")>] From_Run of run: string
        | Results of dir: string
        | Model_Config of path: string
        | Weights of path: string
        | Adapter of path: string
        | [<Mandatory>] Out of path: string
        | Weight of weight: float
        | Combination of kind: string
        | Svd_Rank of rank: int
        | Svd_Clamp of quantile: float
        | Disable_Adapter
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Model _ -> "an .onnx file, resnet18_mlnet, or a ViT, ConvNeXt or ResNet zoo model"
                | From_Run _ -> Usage.fromRun
                | Results _ -> Usage.results
                | Model_Config _ -> "a JSON file of model options (num_classes, ...)"
                | Weights _ -> "the model's safetensors file"
                | Adapter _ -> "an adapter folder, merged into the weights (repeat for several, combined with --weight)"
                | Weight _ -> Usage.weight
                | Combination _ -> Usage.combination
                | Svd_Rank _ -> Usage.svdRank
                | Svd_Clamp _ -> Usage.svdClamp
                | Disable_Adapter -> "load the adapters, then disable them: export the base model (a check)"
                | Out _ -> "the .onnx file to write"

    type PredictArgs =
        | [<MainCommand>] Images of images: string list
        | Model of model: string
        | [<CustomCommandLine("--run")>] From_Run of run: string
        | Results of dir: string
        | Model_Config of path: string
        | Weights of path: string
        | Adapter of path: string
        | Labels of path: string
        | Top_K of k: int
        | Mean of values: string
        | Std of values: string
        | Json
        | Weight of weight: float
        | Combination of kind: string
        | Svd_Rank of rank: int
        | Svd_Clamp of quantile: float
        | Disable_Adapter
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Images _ -> "image files to classify"
                | Model _ -> "a zoo model name"
                | From_Run _ -> "a finished run (its hash or results/HASH folder): model, weights, adapter, input size, mean/std and labels from its model card"
                | Results _ -> Usage.results
                | Model_Config _ -> "a JSON file of model options"
                | Weights _ -> "the model's safetensors file"
                | Adapter _ -> "an adapter to apply (repeat for several, combined with --weight)"
                | Weight _ -> Usage.weight
                | Combination _ -> Usage.combination
                | Svd_Rank _ -> Usage.svdRank
                | Svd_Clamp _ -> Usage.svdClamp
                | Disable_Adapter -> "load the adapters, then disable them: the base model's predictions (a check)"
                | Labels _ -> "a text file with one label per line"
                | Top_K _ -> "how many labels per image (default 5)"
                | Mean _ -> "per-channel mean subtracted from pixels in [0, 1], comma-separated, or 'imagenet' (default: the run's card with --run, else none)"
                | Std _ -> "per-channel standard deviation to divide by, comma-separated, or 'imagenet' (default: the run's card with --run, else none)"
                | Json -> "print JSON instead of text"

    type CombineArgs =
        | [<Mandatory>] Model of model: string
        | Model_Config of path: string
        | [<Mandatory>] Adapter of path: string
        | [<Mandatory>] Out of dir: string
        | Weight of weight: float
        | Combination of kind: string
        | Svd_Rank of rank: int
        | Svd_Clamp of quantile: float
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Model _ -> "the zoo model the adapters were trained on"
                | Model_Config _ -> "a JSON file of model options"
                | Adapter _ -> "an adapter folder (repeat: the adapters to combine)"
                | Out _ -> "the adapter folder to write (adapter_config.json + adapter_model.safetensors, loadable by PEFT)"
                | Weight _ -> Usage.weight
                | Combination _ -> Usage.combination
                | Svd_Rank _ -> Usage.svdRank
                | Svd_Clamp _ -> Usage.svdClamp

    type AdaptersArgs =
        | [<MainCommand; Mandatory>] Arguments of args: string list
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Arguments _ -> "list DIR | delete DIR NAME | rename DIR NAME NEW: the adapters of a PEFT folder (default at its root, the others in subfolders)"

    type BenchArgs =
        | [<Mandatory>] Model of model: string
        | Batch of size: int
        | Img of size: int
        | Classes of count: int
        | Rank of rank: int
        | Methods of methods: string list
        | Device of device: string
        | Steps of count: int
        | Warmup of count: int
        | Precision of precision: string
        | Model_Config of path: string
        | Json
        | Isolate
        | In_Process
        | Targets of modules: string list
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Model _ -> "a zoo model name"
                | Batch _ -> "batch size"
                | Img _ -> "image size"
                | Classes _ -> "number of classes"
                | Rank _ -> "rank of the tuned methods"
                | Methods _ -> "methods to compare (space- or comma-separated): full lora lora-all dora adalora adapter bitfit ln_tuning ssf ia3 loha lokr vera adaptformer vpt vpt-deep"
                | Device _ -> "cpu or cuda"
                | Steps _ -> "timed training steps"
                | Warmup _ -> "untimed steps first"
                | Precision _ -> "fp32 or bf16 (weights in bf16, adapters in fp32, fp32 master weights in the optimiser); default bf16 on cuda, fp32 on cpu"
                | Model_Config _ -> "JSON file of timm constructor arguments for the model"
                | Json -> "print JSON instead of a table"
                | Isolate -> "run each method in a fresh process (the default on cuda: one method's cached GPU memory does not count in the next's peak)"
                | In_Process -> "run every method in this process (the default on cpu)"
                | Targets _ -> "the modules every layer-targeting preset tunes (default: the model family's: a ViT's qkv, a ConvNeXt's fc1 fc2, a ResNet's conv1 conv2)"

    type SubmitArgs =
        | [<MainCommand; ExactlyOnce>] Spec of spec: string
        | Results of dir: string
        | Partition of partition: string
        | Gpus_Per_Task of count: int
        | Time of limit: string
        | Max_Parallel of count: int
        | Dry_Run
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Spec _ -> "the experiment spec (.yaml, .yml or .fsx)"
                | Results _ -> "the shared results folder (default: results)"
                | Partition _ -> "the Slurm partition"
                | Gpus_Per_Task _ -> "GPUs per array task"
                | Time _ -> "time limit per task (Slurm format, e.g. 01:00:00)"
                | Max_Parallel _ -> "at most this many tasks of an array at once"
                | Dry_Run -> "print the sbatch scripts; submit nothing"

    type StatusArgs =
        | [<MainCommand; ExactlyOnce>] Spec of spec: string
        | Results of dir: string
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Spec _ -> "the experiment spec (.yaml, .yml or .fsx)"
                | Results _ -> "the results folder (default: results)"

    type EvalArgs =
        | [<CustomCommandLine("--run"); Mandatory>] From_Run of run: string
        | Results of dir: string
        | [<Mandatory>] Dataset of dataset: string
        | Path of path: string
        | Classes of classes: string list
        | Limit of count: int
        | Seed of seed: int
        | Device of device: string
        | Json
        | Out of path: string
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | From_Run _ -> "the finished run to evaluate (its hash or results/HASH folder)"
                | Results _ -> Usage.results
                | Dataset _ -> "a source as a spec names it (fashion_mnist, cifar, image_folder, segmentation_pairs, composed_segmentation), or a YAML file holding a spec's dataset: entry"
                | Path _ -> "the data set's folder (with a source name)"
                | Classes _ -> "the class subset, in the run's label order (comma-separated)"
                | Limit _ -> "evaluate at most this many images (a seeded sample)"
                | Seed _ -> "the seed of the sample and split (default 0)"
                | Device _ -> "cpu or cuda (default cpu)"
                | Json -> "print the metrics as JSON"
                | Out _ -> "also write the metrics as JSON to this file"

    type HelpArgs =
        | [<MainCommand>] Command of command: string
        interface IArgParserTemplate with
            member a.Usage = match a with Command _ -> "the command to describe (validate, plan, run, ...)"

    type LoraArgs =
        | [<CliPrefix(CliPrefix.None)>] Help of ParseResults<HelpArgs>
        | [<CliPrefix(CliPrefix.None)>] Validate of ParseResults<ValidateArgs>
        | [<CliPrefix(CliPrefix.None)>] Plan of ParseResults<PlanArgs>
        | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<RunArgs>
        | [<CliPrefix(CliPrefix.None)>] Tables of ParseResults<TablesArgs>
        | [<CliPrefix(CliPrefix.None)>] Summary of ParseResults<SummaryArgs>
        | [<CliPrefix(CliPrefix.None)>] Merge of ParseResults<MergeArgs>
        | [<CliPrefix(CliPrefix.None)>] Predict of ParseResults<PredictArgs>
        | [<CliPrefix(CliPrefix.None)>] Forward of ParseResults<ForwardArgs>
        | [<CliPrefix(CliPrefix.None)>] Export of ParseResults<ExportArgs>
        | [<CliPrefix(CliPrefix.None)>] Combine of ParseResults<CombineArgs>
        | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<EvalArgs>
        | [<CliPrefix(CliPrefix.None)>] Adapters of ParseResults<AdaptersArgs>
        | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<BenchArgs>
        | [<CliPrefix(CliPrefix.None)>] Submit of ParseResults<SubmitArgs>
        | [<CliPrefix(CliPrefix.None)>] Status of ParseResults<StatusArgs>
        | Version
        interface IArgParserTemplate with
            member a.Usage =
                match a with
                | Help _ -> "this list, or a command's options (lora help run)"
                | Validate _ -> "check a spec; every problem on its own line (exit 2 if any)"
                | Plan _ -> "show the runs of a spec, their dependencies and whether they are done"
                | Run _ -> "run what is missing, in dependency order"
                | Tables _ -> "regenerate the markdown tables and plots from the results"
                | Summary _ -> "parameter summary of a zoo model with a tuning method"
                | Merge _ -> "merge an adapter into its base model's weights"
                | Predict _ -> "classify images: top-k labels with scores"
                | Forward _ -> "the eval-mode forward of a tensor (parity checks against other frameworks)"
                | Export _ -> "write the merged model as an ONNX file"
                | Combine _ -> "combine several LoRA adapters with weights into one adapter folder (PEFT's add_weighted_adapter)"
                | Eval _ -> "evaluate a finished run on a data set: its metrics, printed or saved"
                | Adapters _ -> "list, delete or rename the adapters of a multi-adapter PEFT folder"
                | Bench _ -> "time training steps of the methods on one model"
                | Submit _ -> "submit the plan to Slurm: one job array per dependency level"
                | Status _ -> "pending/running/done/failed per run (results folder and Slurm)"
                | Version -> "print the version"

/// Parsed options per command, shaped for C# (strings may be null, numbers Nullable).
type ValidateOptions = { Spec: string }
type PlanOptions = { Spec: string; Results: string; Json: bool }
type RunOptions =
    { /// one or more specs, compiled into one plan
      Specs: string list
      Results: string
      /// "cpu", "cuda" or null (the spec's)
      Device: string
      /// null = every run
      Only: string
      ShardIndex: int
      ShardCount: int
      Force: bool
      /// null = do not regenerate tables after the run
      Tables: string
      /// recompute the committed results and compare them bit for bit
      Verify: bool }
type TablesOptions =
    { Results: string
      Out: string
      /// specs whose experiments' declared tables are used (empty: default layouts)
      Specs: string list }
type SummaryOptions =
    { Model: string; Method: string; Rank: Nullable<int>; Alpha: Nullable<float>; Targets: string list; Train: string list
      Bias: string; InitRank: Nullable<int>; Classes: Nullable<int>; ModelConfig: string
      /// LoRA's init (null: the default) and fused q/v parts (empty: plain LoRA)
      Init: string; FusedQkv: string list }
/// The adapters of a model command: one or several --adapter, their --weight, how they combine.
type AdapterChoice =
    { /// every --adapter in order (empty: none)
      Paths: string list
      /// one per path, or empty (every weight 1)
      Weights: float list
      /// "cat", "linear" or "svd"
      Combination: string
      SvdRank: Nullable<int>
      SvdClamp: Nullable<float>
      /// --disable-adapter: loaded, then disabled (the base model's outputs)
      Disabled: bool }
    /// Several adapters, or one with a weight other than 1: a weighted combination.
    member c.Combined = c.Paths.Length > 1 || c.Weights |> List.exists (fun w -> w <> 1.0)
type MergeOptions =
    { Model: string; ModelConfig: string; Weights: string; Adapter: string; Out: string
      Adapters: AdapterChoice
      /// --run HASH|DIR (null: none) and the results folder it is looked up in
      Run: string
      Results: string }
type ForwardOptions =
    { Model: string; ModelConfig: string; Weights: string; Adapter: string; Input: string; Out: string
      Adapters: AdapterChoice
      /// --run HASH|DIR (null: none) and the results folder it is looked up in
      Run: string
      Results: string }
type ExportOptions =
    { Model: string; ModelConfig: string; Weights: string; Adapter: string; Out: string
      Adapters: AdapterChoice
      /// --run HASH|DIR (null: none) and the results folder it is looked up in
      Run: string
      Results: string }
type CombineOptions = { Model: string; ModelConfig: string; Out: string; Adapters: AdapterChoice }
type PredictOptions =
    { Images: string list; Model: string; ModelConfig: string; Weights: string; Adapter: string; Labels: string; TopK: int; Json: bool
      /// the --mean and --std texts as given (null: no normalisation)
      Mean: string
      Std: string
      Adapters: AdapterChoice
      /// --run HASH|DIR (null: none) and the results folder it is looked up in
      Run: string
      Results: string }
type EvalOptions =
    { Run: string; Results: string
      /// a source name or a YAML file with a dataset: entry
      Dataset: string
      Path: string
      Classes: int list
      Limit: Nullable<int>
      Seed: int
      Device: string
      Json: bool
      /// null: print only
      Out: string }
/// `lora adapters ACTION DIR [NAME [NEW]]`.
type AdaptersOptions =
    { /// "list", "delete" or "rename"
      Action: string
      Dir: string
      /// the adapter (delete, rename; "default" is the folder's root), else null
      Name: string
      /// rename's new name, else null
      NewName: string }
type BenchOptions =
    { Model: string; Batch: Nullable<int>; Img: Nullable<int>; Classes: Nullable<int>; Rank: Nullable<int>; Methods: string list
      Device: string; Steps: Nullable<int>; Warmup: Nullable<int>; Json: bool
      /// "fp32", "bf16" or null (bf16)
      Precision: string
      ModelConfig: string
      /// true: a process per method; false: all in this one; null: a process per method on CUDA only
      Isolate: Nullable<bool>
      /// --targets: the modules of every layer-targeting preset ([]: the model family's)
      Targets: string list }
type SubmitOptions =
    { Spec: string; Results: string; Partition: string; GpusPerTask: Nullable<int>; Time: string; MaxParallel: Nullable<int>; DryRun: bool }
type StatusOptions = { Spec: string; Results: string }

/// A parsed command with its options.
type Command =
    | Validate of ValidateOptions
    | Plan of PlanOptions
    | Run of RunOptions
    | Tables of TablesOptions
    | Summary of SummaryOptions
    | Merge of MergeOptions
    | Predict of PredictOptions
    | Forward of ForwardOptions
    | Export of ExportOptions
    | Combine of CombineOptions
    | Eval of EvalOptions
    | Adapters of AdaptersOptions
    | Bench of BenchOptions
    | Submit of SubmitOptions
    | Status of StatusOptions
    | Version

/// What C# does with each command: one method per command, so that a new command is a compile
/// error in every handler rather than a case a switch forgets.
type ICommandHandler<'T> =
    abstract Validate: ValidateOptions -> 'T
    abstract Plan: PlanOptions -> 'T
    abstract Run: RunOptions -> 'T
    abstract Tables: TablesOptions -> 'T
    abstract Summary: SummaryOptions -> 'T
    abstract Merge: MergeOptions -> 'T
    abstract Predict: PredictOptions -> 'T
    abstract Forward: ForwardOptions -> 'T
    abstract Export: ExportOptions -> 'T
    abstract Combine: CombineOptions -> 'T
    abstract Eval: EvalOptions -> 'T
    abstract Adapters: AdaptersOptions -> 'T
    abstract Bench: BenchOptions -> 'T
    abstract Submit: SubmitOptions -> 'T
    abstract Status: StatusOptions -> 'T
    abstract Version: unit -> 'T

/// A parsed command line: the command and the line as given.
[<AllowNullLiteral>]
type ParsedCommand(command: Command, commandLine: string) =
    member _.Command = command
    /// The arguments as given, quoted where needed (logged into each result).
    member _.CommandLine = commandLine

    member _.Accept<'T>(handler: ICommandHandler<'T>) : 'T =
        match command with
        | Validate o -> handler.Validate o
        | Plan o -> handler.Plan o
        | Run o -> handler.Run o
        | Tables o -> handler.Tables o
        | Summary o -> handler.Summary o
        | Merge o -> handler.Merge o
        | Predict o -> handler.Predict o
        | Forward o -> handler.Forward o
        | Export o -> handler.Export o
        | Combine o -> handler.Combine o
        | Eval o -> handler.Eval o
        | Adapters o -> handler.Adapters o
        | Bench o -> handler.Bench o
        | Submit o -> handler.Submit o
        | Status o -> handler.Status o
        | Version -> handler.Version()

/// Result of parsing: a command, or a message to print with the exit code (0 for --help, 2 for errors).
type ParseOutcome =
    { Command: ParsedCommand
      ExitCode: int
      Message: string }

/// The C# entry point to the grammar.
type CommandLine private () =
    static let parser = ArgumentParser.Create<Cli.LoraArgs>(programName = "lora")
    static let defaultResults = "results"
    static let orNull (x: string option) = Option.toObj x
    static let nullable (x: 'a option) = match x with Some v -> Nullable v | None -> Nullable()

    static member Usage = parser.PrintUsage()

    /// "I/N" → (I, N) with 0 ≤ I < N.
    static member ParseShard(text: string) : Result<int * int, string> =
        let bad () = Error(sprintf "--shard must be I/N with 0 <= I < N (e.g. 0/4), got '%s'" text)
        match text.Split '/' with
        | [| i; n |] ->
            match Int32.TryParse i, Int32.TryParse n with
            | (true, i), (true, n) when n >= 1 && i >= 0 && i < n -> Ok(i, n)
            | _ -> bad ()
        | _ -> bad ()

    /// The adapters of a model command, checked: one --weight per --adapter (or none), a known
    /// combination, the svd options only with svd, --disable-adapter only with an adapter.
    static member AdapterChoice(paths: string list, weights: float list, combination: string option, svdRank: int option, svdClamp: float option, disabled: bool) : Result<AdapterChoice, string> =
        let choice = { Paths = paths; Weights = weights; Combination = defaultArg combination "cat"; SvdRank = Option.toNullable svdRank
                       SvdClamp = Option.toNullable svdClamp; Disabled = disabled }
        if not weights.IsEmpty && weights.Length <> paths.Length then
            Error(sprintf "give one --weight per --adapter, in the same order (got %d adapter(s), %d weight(s))" paths.Length weights.Length)
        elif not (List.contains choice.Combination [ "cat"; "linear"; "svd" ]) then
            Error(sprintf "--combination must be cat, linear or svd, got '%s'" choice.Combination)
        elif paths.IsEmpty && (combination.IsSome || disabled) then Error "--combination and --disable-adapter need at least one --adapter"
        elif (svdRank.IsSome || svdClamp.IsSome) && choice.Combination <> "svd" then Error "--svd-rank and --svd-clamp go with --combination svd"
        elif svdRank |> Option.exists (fun r -> r < 1) then Error(sprintf "--svd-rank must be at least 1, got %d" svdRank.Value)
        elif svdClamp |> Option.exists (fun q -> not (q >= 0.0 && q <= 1.0)) then Error(sprintf "--svd-clamp is a quantile in [0, 1], got %g" svdClamp.Value)
        else Ok choice

    static member Quote(arg: string) =
        if arg <> "" && arg |> Seq.forall (fun c -> Char.IsLetterOrDigit c || "-_./=:,@+".Contains c) then arg
        else "'" + arg.Replace("'", "'\\''") + "'"

    static member Parse(args: string[]) : ParseOutcome =
        match args with
        // `lora help CMD` is `lora CMD --help`: Argu's usage of that command
        | [| "help"; cmd |] when not (cmd.StartsWith "-") -> CommandLine.Parse [| cmd; "--help" |]
        | _ -> CommandLine.ParseCommand args

    static member private ParseCommand(args: string[]) : ParseOutcome =
        let line = "lora " + (args |> Array.map CommandLine.Quote |> String.concat " ")
        // list options take `a,b` as well as `a b`
        let commaList (values: string list) =
            values |> List.collect (fun v -> v.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray)
        let ok (c: ParsedCommand) = { Command = c; ExitCode = 0; Message = null }
        let fail code msg = { Command = null; ExitCode = code; Message = msg }
        try
            let r = parser.ParseCommandLine(args, raiseOnUsage = true)
            let device (d: string option) =
                match d with
                | None | Some "cpu" | Some "cuda" -> Ok(orNull d)
                | Some other -> Error(sprintf "--device must be cpu or cuda, got '%s'" other)
            if r.Contains Cli.LoraArgs.Version then ok (ParsedCommand(Command.Version, line)) else
            match r.GetSubCommand() with
            | Cli.Help _ -> fail 0 (parser.PrintUsage())
            | Cli.Validate a -> ok (ParsedCommand(Command.Validate { Spec = a.GetResult Cli.ValidateArgs.Spec }, line))
            | Cli.Plan a ->
                ok (ParsedCommand(Command.Plan { Spec = a.GetResult Cli.PlanArgs.Spec; Results = a.GetResult(Cli.PlanArgs.Results, defaultResults); Json = a.Contains Cli.PlanArgs.Json }, line))
            | Cli.Run a ->
                let shard = a.TryGetResult Cli.RunArgs.Shard |> Option.map CommandLine.ParseShard
                match shard, device (a.TryGetResult Cli.RunArgs.Device) with
                | Some(Error m), _ | _, Error m -> fail 2 (m + "\n" + parser.GetSubCommandParser(Cli.Run).PrintUsage())
                | shard, Ok dev ->
                    let i, n = match shard with Some(Ok s) -> s | _ -> 0, 1
                    ok (ParsedCommand(Command.Run { Specs = a.GetResult Cli.RunArgs.Spec; Results = a.GetResult(Cli.RunArgs.Results, defaultResults); Device = dev
                                                    Only = orNull (a.TryGetResult Cli.RunArgs.Only); ShardIndex = i; ShardCount = n; Force = a.Contains Cli.RunArgs.Force
                                                    Tables = orNull (a.TryGetResult Cli.RunArgs.Write_Tables); Verify = a.Contains Cli.RunArgs.Verify }, line))
            | Cli.Tables a ->
                ok (ParsedCommand(Command.Tables { Results = a.GetResult(Cli.TablesArgs.Results, defaultResults); Out = a.GetResult(Cli.TablesArgs.Out, "paper-tables")
                                                   Specs = a.GetResults Cli.TablesArgs.Spec }, line))
            | Cli.Summary a ->
                ok (ParsedCommand(Command.Summary { Model = a.GetResult Cli.SummaryArgs.Model; Method = a.GetResult(Cli.SummaryArgs.Method, "lora")
                                                    Rank = nullable (a.TryGetResult Cli.SummaryArgs.Rank); Alpha = nullable (a.TryGetResult Cli.SummaryArgs.Alpha)
                                                    Targets = commaList (a.GetResult(Cli.SummaryArgs.Targets, [])); Train = commaList (a.GetResult(Cli.SummaryArgs.Train, []))
                                                    Bias = a.GetResult(Cli.SummaryArgs.Bias, "none"); InitRank = nullable (a.TryGetResult Cli.SummaryArgs.Init_Rank)
                                                    Classes = nullable (a.TryGetResult Cli.SummaryArgs.Classes); ModelConfig = orNull (a.TryGetResult Cli.SummaryArgs.Model_Config)
                                                    Init = orNull (a.TryGetResult Cli.SummaryArgs.Init); FusedQkv = commaList (a.GetResult(Cli.SummaryArgs.Fused_Qkv, [])) }, line))
            | Cli.Merge a ->
                match CommandLine.AdapterChoice(a.GetResults Cli.MergeArgs.Adapter, a.GetResults Cli.MergeArgs.Weight, a.TryGetResult Cli.MergeArgs.Combination,
                                                a.TryGetResult Cli.MergeArgs.Svd_Rank, a.TryGetResult Cli.MergeArgs.Svd_Clamp, false) with
                | Error m -> fail 2 m
                | Ok adapters ->
                ok (ParsedCommand(Command.Merge { Model = orNull (a.TryGetResult Cli.MergeArgs.Model); ModelConfig = orNull (a.TryGetResult Cli.MergeArgs.Model_Config)
                                                  Weights = orNull (a.TryGetResult Cli.MergeArgs.Weights); Adapter = orNull (List.tryHead adapters.Paths); Out = a.GetResult Cli.MergeArgs.Out
                                                  Adapters = adapters
                                                  Run = orNull (a.TryGetResult Cli.MergeArgs.From_Run); Results = a.GetResult(Cli.MergeArgs.Results, defaultResults) }, line))
            | Cli.Combine a ->
                match CommandLine.AdapterChoice(a.GetResults Cli.CombineArgs.Adapter, a.GetResults Cli.CombineArgs.Weight, a.TryGetResult Cli.CombineArgs.Combination,
                                                a.TryGetResult Cli.CombineArgs.Svd_Rank, a.TryGetResult Cli.CombineArgs.Svd_Clamp, false) with
                | Error m -> fail 2 m
                | Ok adapters ->
                ok (ParsedCommand(Command.Combine { Model = a.GetResult Cli.CombineArgs.Model; ModelConfig = orNull (a.TryGetResult Cli.CombineArgs.Model_Config)
                                                    Out = a.GetResult Cli.CombineArgs.Out; Adapters = adapters }, line))
            | Cli.Forward a ->
                match CommandLine.AdapterChoice(a.GetResults Cli.ForwardArgs.Adapter, a.GetResults Cli.ForwardArgs.Weight, a.TryGetResult Cli.ForwardArgs.Combination,
                                                a.TryGetResult Cli.ForwardArgs.Svd_Rank, a.TryGetResult Cli.ForwardArgs.Svd_Clamp, a.Contains Cli.ForwardArgs.Disable_Adapter) with
                | Error m -> fail 2 m
                | Ok adapters ->
                ok (ParsedCommand(Command.Forward { Model = orNull (a.TryGetResult Cli.ForwardArgs.Model); ModelConfig = orNull (a.TryGetResult Cli.ForwardArgs.Model_Config)
                                                    Weights = orNull (a.TryGetResult Cli.ForwardArgs.Weights); Adapter = orNull (List.tryHead adapters.Paths)
                                                    Input = a.GetResult Cli.ForwardArgs.Input; Out = a.GetResult Cli.ForwardArgs.Out; Adapters = adapters
                                                    Run = orNull (a.TryGetResult Cli.ForwardArgs.From_Run); Results = a.GetResult(Cli.ForwardArgs.Results, defaultResults) }, line))
            | Cli.Export a ->
                match CommandLine.AdapterChoice(a.GetResults Cli.ExportArgs.Adapter, a.GetResults Cli.ExportArgs.Weight, a.TryGetResult Cli.ExportArgs.Combination,
                                                a.TryGetResult Cli.ExportArgs.Svd_Rank, a.TryGetResult Cli.ExportArgs.Svd_Clamp, a.Contains Cli.ExportArgs.Disable_Adapter) with
                | Error m -> fail 2 m
                | Ok adapters ->
                ok (ParsedCommand(Command.Export { Model = orNull (a.TryGetResult Cli.ExportArgs.Model); ModelConfig = orNull (a.TryGetResult Cli.ExportArgs.Model_Config)
                                                   Weights = orNull (a.TryGetResult Cli.ExportArgs.Weights); Adapter = orNull (List.tryHead adapters.Paths)
                                                   Out = a.GetResult Cli.ExportArgs.Out; Adapters = adapters
                                                   Run = orNull (a.TryGetResult Cli.ExportArgs.From_Run); Results = a.GetResult(Cli.ExportArgs.Results, defaultResults) }, line))
            | Cli.Eval a ->
                let classes =
                    commaList (a.GetResult(Cli.EvalArgs.Classes, []))
                    |> List.map (fun c -> match Int32.TryParse c with | true, v -> Ok v | _ -> Error(sprintf "--classes takes class indices (e.g. 5,6,7), got '%s'" c))
                match device (a.TryGetResult Cli.EvalArgs.Device), classes |> List.tryPick (function Error m -> Some m | Ok _ -> None) with
                | Error m, _ | _, Some m -> fail 2 (m + "\n" + parser.GetSubCommandParser(Cli.Eval).PrintUsage())
                | Ok dev, None ->
                    ok (ParsedCommand(Command.Eval { Run = a.GetResult Cli.EvalArgs.From_Run; Results = a.GetResult(Cli.EvalArgs.Results, defaultResults)
                                                     Dataset = a.GetResult Cli.EvalArgs.Dataset; Path = orNull (a.TryGetResult Cli.EvalArgs.Path)
                                                     Classes = classes |> List.choose (function Ok v -> Some v | Error _ -> None)
                                                     Limit = nullable (a.TryGetResult Cli.EvalArgs.Limit); Seed = a.GetResult(Cli.EvalArgs.Seed, 0)
                                                     Device = dev; Json = a.Contains Cli.EvalArgs.Json; Out = orNull (a.TryGetResult Cli.EvalArgs.Out) }, line))
            | Cli.Predict a ->
                match CommandLine.AdapterChoice(a.GetResults Cli.PredictArgs.Adapter, a.GetResults Cli.PredictArgs.Weight, a.TryGetResult Cli.PredictArgs.Combination,
                                                a.TryGetResult Cli.PredictArgs.Svd_Rank, a.TryGetResult Cli.PredictArgs.Svd_Clamp, a.Contains Cli.PredictArgs.Disable_Adapter) with
                | Error m -> fail 2 m
                | Ok adapters ->
                ok (ParsedCommand(Command.Predict { Images = a.GetResult(Cli.PredictArgs.Images, []); Model = orNull (a.TryGetResult Cli.PredictArgs.Model)
                                                    Run = orNull (a.TryGetResult Cli.PredictArgs.From_Run); Results = a.GetResult(Cli.PredictArgs.Results, defaultResults)
                                                    ModelConfig = orNull (a.TryGetResult Cli.PredictArgs.Model_Config); Weights = orNull (a.TryGetResult Cli.PredictArgs.Weights)
                                                    Adapter = orNull (List.tryHead adapters.Paths); Labels = orNull (a.TryGetResult Cli.PredictArgs.Labels)
                                                    TopK = a.GetResult(Cli.PredictArgs.Top_K, 5); Json = a.Contains Cli.PredictArgs.Json
                                                    Mean = orNull (a.TryGetResult Cli.PredictArgs.Mean); Std = orNull (a.TryGetResult Cli.PredictArgs.Std)
                                                    Adapters = adapters }, line))
            | Cli.Bench a ->
                let precision =
                    match a.TryGetResult Cli.BenchArgs.Precision with
                    | None | Some "fp32" | Some "bf16" as p -> Ok(orNull p)
                    | Some other -> Error(sprintf "--precision must be fp32 or bf16, got '%s'" other)
                let isolate =
                    match a.Contains Cli.BenchArgs.Isolate, a.Contains Cli.BenchArgs.In_Process with
                    | true, true -> Error "--isolate and --in-process contradict each other: give one"
                    | true, false -> Ok(Nullable true)
                    | false, true -> Ok(Nullable false)
                    | false, false -> Ok(Nullable())
                match device (a.TryGetResult Cli.BenchArgs.Device), precision, isolate with
                | Error m, _, _ | _, Error m, _ | _, _, Error m -> fail 2 m
                | Ok dev, Ok precision, Ok isolate ->
                    ok (ParsedCommand(Command.Bench { Model = a.GetResult Cli.BenchArgs.Model; Batch = nullable (a.TryGetResult Cli.BenchArgs.Batch)
                                                      Img = nullable (a.TryGetResult Cli.BenchArgs.Img); Classes = nullable (a.TryGetResult Cli.BenchArgs.Classes)
                                                      Rank = nullable (a.TryGetResult Cli.BenchArgs.Rank); Methods = commaList (a.GetResult(Cli.BenchArgs.Methods, []))
                                                      Device = dev; Steps = nullable (a.TryGetResult Cli.BenchArgs.Steps)
                                                      Warmup = nullable (a.TryGetResult Cli.BenchArgs.Warmup); Json = a.Contains Cli.BenchArgs.Json
                                                      Precision = precision; ModelConfig = orNull (a.TryGetResult Cli.BenchArgs.Model_Config)
                                                      Isolate = isolate; Targets = commaList (a.GetResult(Cli.BenchArgs.Targets, [])) }, line))
            | Cli.Submit a ->
                ok (ParsedCommand(Command.Submit { Spec = a.GetResult Cli.SubmitArgs.Spec; Results = a.GetResult(Cli.SubmitArgs.Results, defaultResults)
                                                   Partition = orNull (a.TryGetResult Cli.SubmitArgs.Partition); GpusPerTask = nullable (a.TryGetResult Cli.SubmitArgs.Gpus_Per_Task)
                                                   Time = orNull (a.TryGetResult Cli.SubmitArgs.Time); MaxParallel = nullable (a.TryGetResult Cli.SubmitArgs.Max_Parallel)
                                                   DryRun = a.Contains Cli.SubmitArgs.Dry_Run }, line))
            | Cli.Adapters a ->
                let usage = "lora adapters list DIR | delete DIR NAME | rename DIR NAME NEW"
                match a.GetResult Cli.AdaptersArgs.Arguments with
                | [ "list"; dir ] -> ok (ParsedCommand(Command.Adapters { Action = "list"; Dir = dir; Name = null; NewName = null }, line))
                | [ "delete"; dir; name ] -> ok (ParsedCommand(Command.Adapters { Action = "delete"; Dir = dir; Name = name; NewName = null }, line))
                | [ "rename"; dir; name; newName ] -> ok (ParsedCommand(Command.Adapters { Action = "rename"; Dir = dir; Name = name; NewName = newName }, line))
                | action :: _ when not (List.contains action [ "list"; "delete"; "rename" ]) -> fail 2 (sprintf "unknown action '%s': %s" action usage)
                | _ -> fail 2 (sprintf "wrong arguments: %s" usage)
            | Cli.Status a ->
                ok (ParsedCommand(Command.Status { Spec = a.GetResult Cli.StatusArgs.Spec; Results = a.GetResult(Cli.StatusArgs.Results, defaultResults) }, line))
            | Cli.Version -> ok (ParsedCommand(Command.Version, line))
        with
        | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText -> fail 0 e.Message
        | :? ArguParseException as e -> fail 2 e.Message
