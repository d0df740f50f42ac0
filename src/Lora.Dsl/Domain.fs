namespace Lora.Dsl

/// A LoRA rank: a positive integer (validated single-case wrapper).
[<Struct>]
type Rank =
    private | Rank of int
    member r.Value = let (Rank v) = r in v
    static member Create(value: int) : Result<Rank, string> =
        if value > 0 then Ok(Rank value) else Error(sprintf "rank must be a positive integer, got %d" value)
    override r.ToString() = string r.Value

/// A scalar option value of a zoo model (img_size: 32, drop_rate: 0.1, global_pool: "avg", ...).
type OptionValue =
    | Int of int
    | Float of float
    | Text of string
    | Flag of bool

/// A model from the zoo by name ("vit_tiny_patch16_224", or a family "vit" configured by options).
type ZooModel = { Name: string; Options: Map<string, OptionValue> }

type Task =
    | Classification
    | Segmentation

type Device =
    | Cpu
    | Cuda

type Precision =
    | Fp32
    | Bf16
    | Fp16

/// Which biases train beside the LoRA factors (PEFT's `bias`).
type Bias =
    | NoBias
    | LoraOnly
    | AllBias

/// BitFit, LN tuning and SSF: the layers they tune, or every layer they fit (outside
/// modules_to_save) when no targets are named.
type LayerOptions =
    { /// target_modules; [] = every layer the method fits
      LayerTargets: string list
      LayerModulesToSave: string list }

    static member Defaults = { LayerTargets = []; LayerModulesToSave = [ "head" ] }

/// (IA)³ (PEFT IA3Config): the targets and, among them, the feed-forward ones whose input is scaled.
type Ia3Options =
    { Ia3Targets: string list
      /// feedforward_modules (a subset of the targets)
      Feedforward: string list
      Ia3ModulesToSave: string list }

    /// PEFT's setting for ViTs (query/value/output.dense, output.dense feed-forward) in timm's names
    static member Defaults = { Ia3Targets = [ "qkv"; "fc2" ]; Feedforward = [ "fc2" ]; Ia3ModulesToSave = [ "head" ] }

/// LoHa and LoKr (PEFT LoHaConfig / LoKrConfig); the grid's rank is r.
type LycorisOptions =
    { /// alpha; None = 2 × rank (as LoRA's)
      LycorisAlpha: float option
      LycorisTargets: string list
      LycorisModulesToSave: string list
      /// use_effective_conv2d: CP-decomposed k×k convolutions
      EffectiveConv2d: bool
      /// LoKr's decompose_both (ignored by LoHa)
      DecomposeBoth: bool
      /// LoKr's decompose_factor, -1 = near the square root (ignored by LoHa)
      DecomposeFactor: int }

    static member Defaults =
        { LycorisAlpha = None; LycorisTargets = [ "qkv" ]; LycorisModulesToSave = [ "head" ]; EffectiveConv2d = false
          DecomposeBoth = false; DecomposeFactor = -1 }

/// VeRA (PEFT VeraConfig); the grid's rank is r of the shared random matrices.
type VeraOptions =
    { VeraTargets: string list
      VeraModulesToSave: string list
      /// d_initial: λ_d's starting value
      DInitial: float
      /// projection_prng_key: the seed of the shared A and B
      ProjectionPrngKey: int }

    static member Defaults = { VeraTargets = [ "qkv" ]; VeraModulesToSave = [ "head" ]; DInitial = 0.1; ProjectionPrngKey = 0 }

/// OFT (PEFT OFTConfig); the grid's rank is oft_block_size, unless Blocks (PEFT's r) is set.
type OftOptions =
    { OftTargets: string list
      OftModulesToSave: string list
      /// r: the number of blocks per layer; Some = the rank axis does not apply
      Blocks: int option
      /// coft: the constrained variant, with its radius eps
      Coft: bool
      Eps: float
      /// block_share: one block shared by all blocks of a layer
      BlockShare: bool
      /// module_dropout: the fraction of blocks set to the identity in training
      OftModuleDropout: float
      /// use_cayley_neumann: PEFT's Neumann series (default) or the exact Cayley transform
      CayleyNeumann: bool }

    static member Defaults =
        { OftTargets = [ "qkv" ]; OftModulesToSave = [ "head" ]; Blocks = None; Coft = false; Eps = 6e-5; BlockShare = false
          OftModuleDropout = 0.0; CayleyNeumann = true }

/// BOFT (PEFT BOFTConfig); the grid's rank is boft_block_size, unless Blocks (boft_block_num) is set.
type BoftOptions =
    { BoftTargets: string list
      BoftModulesToSave: string list
      /// boft_block_num; Some = the rank axis does not apply
      BoftBlocks: int option
      /// boft_n_butterfly_factor (1: one block-diagonal rotation, as OFT)
      Butterfly: int
      /// boft_dropout: the fraction of one factor's blocks set to the identity in training
      BoftDropout: float }

    static member Defaults = { BoftTargets = [ "qkv" ]; BoftModulesToSave = [ "head" ]; BoftBlocks = None; Butterfly = 1; BoftDropout = 0.0 }

/// HRA (PEFT HRAConfig); the grid's rank is r, the number of Householder reflections.
type HraOptions =
    { HraTargets: string list
      HraModulesToSave: string list
      /// apply_GS: Gram-Schmidt orthonormalised reflections
      ApplyGs: bool }

    static member Defaults = { HraTargets = [ "qkv" ]; HraModulesToSave = [ "head" ]; ApplyGs = false }

/// AdaptFormer; the grid's rank is the bottleneck width.
type AdaptFormerOptions =
    { /// s, the scale of the MLP-parallel bottleneck
      AdaptFormerScale: float
      AdaptFormerModulesToSave: string list }

    static member Defaults = { AdaptFormerScale = 0.1; AdaptFormerModulesToSave = [ "head" ] }

/// VPT; the grid's rank is the number of prompt tokens.
type VptOptions =
    { /// deep VPT (prompts before every block) rather than shallow (before the first)
      VptDeep: bool
      VptModulesToSave: string list }

    static member Defaults = { VptDeep = false; VptModulesToSave = [ "head" ] }

/// How LoRA's factors start (PEFT's init_lora_weights).
type LoraInit =
    /// true: A Kaiming-uniform, B zero
    | DefaultInit
    /// "gaussian": A from N(0, 1/r), B zero
    | GaussianInit
    /// "pissa" (Some k: "pissa_niter_k", a randomised SVD): the top-r singular directions, base residualised
    | PissaInit of niter: int option
    /// "olora": the QR decomposition's leading r columns/rows, base residualised
    | OloraInit

    /// The YAML `init` value (PEFT's init_lora_weights name; PEFT writes `true` for the default).
    member i.Name =
        match i with
        | DefaultInit -> "default"
        | GaussianInit -> "gaussian"
        | PissaInit None -> "pissa"
        | PissaInit(Some k) -> sprintf "pissa_niter_%d" k
        | OloraInit -> "olora"
/// Convpass; the grid's rank is the bottleneck width.
type ConvpassOptions =
    { /// s, the scale of both bypasses
      ConvpassScale: float
      ConvpassModulesToSave: string list }

    static member Defaults = { ConvpassScale = 1.0; ConvpassModulesToSave = [ "head" ] }

/// FacT's factorisation: tensor-train or Tucker.
type FactVariant =
    | FactTT
    | FactTK

/// FacT; the grid's rank is the factors' rank.
type FactOptions =
    { FactVariant: FactVariant
      /// s, the scale of every ΔW
      FactScale: float
      FactTargets: string list
      FactModulesToSave: string list }

    static member Defaults = { FactVariant = FactTT; FactScale = 1.0; FactTargets = [ "qkv"; "attn.proj"; "fc1"; "fc2" ]; FactModulesToSave = [ "head" ] }

/// Options shared by LoRA, DoRA and AdaLoRA (PEFT LoraConfig names in comments).
type LoraOptions =
    { /// lora_alpha; None = 2 × rank (filled in when the grid expands)
      Alpha: float option
      /// lora_dropout
      Dropout: float
      /// target_modules: exact names, dotted suffixes or regular expressions
      Targets: string list
      /// use_rslora: scale alpha/√r instead of alpha/r
      RsLora: bool
      /// bias
      Bias: Bias
      /// modules_to_save: trained in full beside the adapters (the new head)
      ModulesToSave: string list
      /// init_lora_weights (YAML `init`; lora and dora only)
      Init: LoraInit
      /// LoRA+: lora_B (and every trained vector) at this ratio × lr (YAML `loraplus_lr_ratio`); None = off
      LoraPlusRatio: float option
      /// q/v-only LoRA on fused qkv Linears (YAML `fused_qkv: [q, v]`, loralib's enable_lora); [] = plain LoRA
      FusedQkv: string list }

    static member Defaults =
        { Alpha = None; Dropout = 0.0; Targets = [ "qkv" ]; RsLora = false; Bias = NoBias; ModulesToSave = [ "head" ]
          Init = DefaultInit; LoraPlusRatio = None; FusedQkv = [] }

/// AdaLoRA's schedule (PEFT AdaLoraConfig); the grid's rank is target_r.
type AdaLoraOptions =
    { /// init_r; None = ⌈1.5 × target rank⌉
      InitRank: int option
      /// tinit: steps of warm-up before pruning starts
      TInit: int
      /// tfinal: steps at the end with the final budget fixed
      TFinal: int
      /// deltaT: steps between budget allocations
      DeltaT: int
      Beta1: float
      Beta2: float
      /// orth_reg_weight
      OrthReg: float }

    static member Defaults =
        { InitRank = None; TInit = 0; TFinal = 0; DeltaT = 1; Beta1 = 0.85; Beta2 = 0.85; OrthReg = 0.5 }

/// Bottleneck adapter (Houlsby / Medical-SAM-Adapter). The bottleneck width is the grid's rank,
/// unless Ratio is set (hidden = ratio × embed dim), in which case the rank axis does not apply.
type AdapterOptions =
    { Ratio: float option
      Scale: float
      ModulesToSave: string list }

    static member Defaults = { Ratio = None; Scale = 1.0; ModulesToSave = [ "head" ] }

type Method =
    /// every parameter trains
    | Full
    /// only the classifier/decoder head trains (linear probe)
    | Head
    | Lora of LoraOptions
    | Dora of LoraOptions
    | AdaLora of LoraOptions * AdaLoraOptions
    | Adapter of AdapterOptions
    /// only biases train (Ben Zaken et al.)
    | BitFit of LayerOptions
    /// the norms' affine parameters train (PEFT's LN tuning)
    | LnTuning of LayerOptions
    /// (IA)³: learned output (or feed-forward input) scaling vectors
    | Ia3 of Ia3Options
    /// SSF: learned per-channel scale and shift after each layer
    | Ssf of LayerOptions
    | LoHa of LycorisOptions
    | LoKr of LycorisOptions
    | Vera of VeraOptions
    /// a scaled ReLU bottleneck parallel to each block's MLP (Chen et al.)
    | AdaptFormer of AdaptFormerOptions
    /// VPT shallow or deep: learned prompt tokens in the ViT encoder (Jia et al.)
    | Vpt of VptOptions
    /// Convpass: 3×3-conv bypasses beside each ViT block's attention and MLP (Jie & Deng)
    | Convpass of ConvpassOptions
    /// FacT-TT or FacT-TK: ΔW slices from factors shared across blocks (Jie & Deng)
    | Fact of FactOptions
    /// OFT: a block-diagonal orthogonal rotation of each target's input side
    | Oft of OftOptions
    /// BOFT: butterfly-factored orthogonal rotations and an output scale
    | Boft of BoftOptions
    /// HRA: a chain of Householder reflections of each target's input side
    | Hra of HraOptions

    /// Lower-case name used in tables, run names and YAML (full, head, lora, dora, adalora, adapter).
    member m.Name =
        match m with
        | Full -> "full"
        | Head -> "head"
        | Lora _ -> "lora"
        | Dora _ -> "dora"
        | AdaLora _ -> "adalora"
        | Adapter _ -> "adapter"
        | BitFit _ -> "bitfit"
        | LnTuning _ -> "ln_tuning"
        | Ia3 _ -> "ia3"
        | Ssf _ -> "ssf"
        | LoHa _ -> "loha"
        | LoKr _ -> "lokr"
        | Vera _ -> "vera"
        | AdaptFormer _ -> "adaptformer"
        // shallow and deep runs of one grid need distinct names
        | Vpt o -> if o.VptDeep then "vpt_deep" else "vpt"
        | Convpass _ -> "convpass"
        // TT and TK runs of one grid need distinct names
        | Fact o -> if o.FactVariant = FactTK then "fact_tk" else "fact"
        | Oft _ -> "oft"
        | Boft _ -> "boft"
        | Hra _ -> "hra"

    /// Whether the grid's ranks multiply this method.
    member m.UsesRank =
        match m with
        | Full | Head -> false
        | Adapter a -> a.Ratio.IsNone
        | Oft o -> o.Blocks.IsNone
        | Boft o -> o.BoftBlocks.IsNone
        | BitFit _ | LnTuning _ | Ia3 _ | Ssf _ -> false
        | _ -> true

/// Composed segmentation: Fashion-MNIST objects placed on a canvas, masks from their pixels.
type ComposedSegmentation =
    { Canvas: int
      Objects: int
      /// Fashion-MNIST folder the objects come from; None = the installed package
      Path: string option }

type DataSource =
    /// IDX files; None = the Debian package dataset-fashion-mnist
    | FashionMnist of path: string option
    /// CIFAR binary batches
    | Cifar of path: string
    /// one folder per class of PNG/JPEG files
    | ImageFolder of path: string
    /// images/ and masks/ folders with matching names
    | SegmentationPairs of path: string
    | Composed of ComposedSegmentation

    /// For C#: one function per source kind (a folder is null for the installed Fashion-MNIST), so
    /// that a new kind is a compile error there too.
    member s.Match<'T>(fashionMnist: System.Func<string, 'T>, cifar: System.Func<string, 'T>, imageFolder: System.Func<string, 'T>,
                       segmentationPairs: System.Func<string, 'T>, composed: System.Func<ComposedSegmentation, 'T>) : 'T =
        match s with
        | FashionMnist p -> fashionMnist.Invoke(Option.toObj p)
        | Cifar p -> cifar.Invoke p
        | ImageFolder p -> imageFolder.Invoke p
        | SegmentationPairs p -> segmentationPairs.Invoke p
        | Composed c -> composed.Invoke c

/// A view of a data set: a class subset, shots per class, size limits, a validation split.
type DatasetView =
    { Source: DataSource
      /// class subset (original labels, relabelled 0..n-1 in this order); None = all classes
      Classes: int list option
      ShotsPerClass: int option
      LimitTrain: int option
      LimitVal: int option
      /// fraction of the training split held out for validation when the source has no val split
      ValFraction: float
      Seed: int }

    static member Of(source) =
        { Source = source; Classes = None; ShotsPerClass = None; LimitTrain = None; LimitVal = None; ValFraction = 0.1; Seed = 0 }

/// The learning-rate schedule after the warm-up (timm's `sched`).
type Schedule =
    /// half a cosine from lr to min_lr over the remaining steps
    | Cosine
    /// a straight line from lr to min_lr
    | Linear
    /// lr throughout
    | Constant
    /// lr × decay_rate every decay_epochs epochs
    | Step of decayEpochs: int * decayRate: float

/// Which epoch's weights and metrics a run reports.
type Selection =
    /// the last epoch trained (as before early stopping existed)
    | LastEpoch
    /// the epoch with the best validation metric (accuracy, DICE; the loss where there is none)
    | BestEpoch

/// The classifier of a tune whose base has one (weights, a pretrain step): a fresh one for the new
/// task, or the base's own when its shape fits.
type HeadInit =
    | FreshHead
    | ReuseHead

/// Training settings shared by pretraining and tuning.
type Training =
    { Epochs: int
      Batch: int
      Lr: float
      Warmup: int
      WeightDecay: float
      Device: Device
      Precision: Precision
      /// input size; None = the model's own
      ImageSize: int option
      // The recipe (PEFT/timm names in the YAML). Canonical emits each only when it differs from its
      // default, so runs that do not use it keep their hashes.
      /// sched (cosine)
      Schedule: Schedule
      /// min_lr: where cosine and linear end (0)
      MinLr: float
      /// clip_grad: maximum global gradient norm; None = no clipping (1.0)
      ClipGrad: float option
      /// gradient_accumulation_steps: batches per optimiser step (1)
      GradAccum: int
      /// label_smoothing (0)
      LabelSmoothing: float
      /// hflip: flip training images left-right with probability 1/2 (false)
      HFlip: bool
      /// crop_padding: pad by this many pixels and crop back at a random offset (0: off)
      CropPadding: int
      /// random_resized_crop: the smallest area fraction of timm's RandomResizedCrop, ratio 3/4-4/3 (None: off)
      RandomResizedCrop: float option
      /// early_stopping_patience: stop after this many epochs without a better validation metric (None: off)
      Patience: int option
      /// select: which epoch a run reports (last; best with early stopping)
      Select: Selection
      /// head: fresh (default) or reuse the base model's classifier when its shape fits
      Head: HeadInit }

    static member Defaults =
        { Epochs = 1; Batch = 32; Lr = 1e-3; Warmup = 0; WeightDecay = 0.0; Device = Cpu; Precision = Fp32; ImageSize = None
          Schedule = Cosine; MinLr = 0.0; ClipGrad = Some 1.0; GradAccum = 1; LabelSmoothing = 0.0; HFlip = false; CropPadding = 0
          RandomResizedCrop = None; Patience = None; Select = LastEpoch; Head = FreshHead }

/// One training setting (one key of the YAML with its value): what a grid axis over training options
/// and a method's own overrides are made of. Apply sets it on a Training; Key and Label name it.
[<RequireQualifiedAccess>]
type Setting =
    | Epochs of int
    | Batch of int
    | Lr of float
    | Warmup of int
    | WeightDecay of float
    | Device of Device
    | Precision of Precision
    | ImageSize of int
    | Schedule of Schedule
    | MinLr of float
    | ClipGrad of float option
    | GradAccum of int
    | LabelSmoothing of float
    | HFlip of bool
    | CropPadding of int
    | RandomResizedCrop of float option
    | Patience of int option
    | Select of Selection
    | Head of HeadInit

/// A method declared with more than its options: a name of its own (lora-qkv), options given as
/// lists (alpha: [8, 16], grid axes), or training settings of its own (a learning rate per method,
/// as papers tune them). The grid expands its choices × ranks × training axes.
type Variant =
    { /// replaces the method's name in run names and tables (lora-qkv); None = the method's name
      Name: string option
      /// the method values this declaration stands for, each with the labels that tell it apart in
      /// run names (["alpha16"]); one value with no labels when no option is a list
      Choices: (string list * Method) list
      /// training settings of this method alone, as axes (a one-value axis is an override); an axis
      /// replaces the experiment's setting or axis of the same key
      Training: Setting list list }

    /// The method (of the first choice: every choice is the same kind).
    member v.Method = v.Choices |> List.head |> snd

/// A step that trains a zoo model from scratch, usable as the base of tunes.
type Pretrain =
    { Name: string
      Model: ZooModel
      Dataset: DatasetView
      Task: Task
      Seed: int
      Training: Training }

type BaseModel =
    | Zoo of ZooModel
    | FromPretrain of Pretrain
    /// a timm-format safetensors file for a zoo architecture
    | Weights of model: ZooModel * path: string
    /// an ONNX graph imported as a module (Name is the .onnx file's path; options such as num_classes)
    | Onnx of model: ZooModel

    /// The zoo architecture underneath (an ONNX model's Name is its file's path).
    member b.ZooModel =
        match b with
        | Zoo m | Weights(m, _) | Onnx m -> m
        | FromPretrain p -> p.Model

/// How a table cell sums up the runs that fall into it (usually one per seed).
type CellAggregate =
    /// the mean
    | Mean
    /// mean ± sample standard deviation, with n when more than one run (the default)
    | MeanStd
    /// the largest value
    | Max

/// One value shown per cell: a metric of the run record (accuracy, dice, trainable, memory, ...; see
/// TableVocabulary), how runs are aggregated, its number format (None = the metric's own) and header.
type TableCell =
    { Metric: string
      Aggregate: CellAggregate
      Format: string option
      Header: string option }

    static member Of(metric) = { Metric = metric; Aggregate = MeanStd; Format = None; Header = None }

/// A row or column axis of a table (method, mode, rank, model, backbone, dataset, variant, seed,
/// config.<path>; see TableVocabulary) and its header.
type TableAxis =
    { Axis: string
      Header: string option }

    static member Of(axis) = { Axis = axis; Header = None }

/// A table declared as data: what its rows and columns are, what a cell shows, which runs it keeps.
/// Part of the experiment, never of a run's hash: changing a table reruns nothing.
type TableDecl =
    { /// names the file: <experiment>.md for the first table, <experiment>-<name>.md for the others
      Name: string
      Caption: string option
      Rows: TableAxis list
      /// empty: one column per cell; else one column per value of these axes (then exactly one cell)
      Columns: TableAxis list
      Cells: TableCell list
      /// keep only runs whose axis value is one of these
      Filters: (string * string list) list
      /// the axes rows are sorted by (empty: the row axes, in order)
      Order: string list
      /// a method (or variant) to compare with: adds a Δ column of per-seed paired differences
      Baseline: string option }

    static member Of(name) =
        { Name = name; Caption = None; Rows = []; Columns = []; Cells = []; Filters = []; Order = []; Baseline = None }

/// How weighted adapters combine (PEFT's add_weighted_adapter combination_type).
[<RequireQualifiedAccess>]
type CombinationType =
    /// rank Σ rᵢ, ΔW = Σ wᵢ·ΔWᵢ exactly
    | Cat
    /// equal ranks, factors summed with weights √(wᵢ·sᵢ)
    | Linear
    /// the truncated SVD of Σ wᵢ·sᵢ·ΔWᵢ
    | Svd

/// A weighted combination of LoRA adapters that other runs of the experiment train (PEFT's
/// add_weighted_adapter): a run of its own that trains nothing, evaluated on the experiment's
/// validation data.
type AdapterCombination =
    { Name: string
      /// (the name of a run of the experiment, its weight)
      Adapters: (string * float) list
      Type: CombinationType
      /// svd's rank; None = the largest rank combined
      SvdRank: int option }

/// An experiment as declared: every list is a grid axis.
type Experiment =
    { Name: string
      Models: BaseModel list
      Datasets: DatasetView list
      Task: Task
      Methods: Method list
      Ranks: int list
      Seeds: int list
      Training: Training
      /// tables of its results (empty: the default layout for its task)
      Tables: TableDecl list
      /// training settings given as lists: each a grid axis (all values of one key)
      Sweeps: Setting list list
      /// methods declared with a name, option lists or settings of their own; their runs follow
      /// those of Methods
      Variants: Variant list
      /// adapters of its runs combined by weight, each a run after those it combines
      Combinations: AdapterCombination list }

type RunKind =
    | Pretraining
    | Tuning
    /// adapters of other runs combined (nothing trains)
    | Combining of CombinedAdapters

/// A combination with the runs it combines (in the order of its adapters).
and CombinedAdapters = { Combination: AdapterCombination; Sources: Run list }

/// One run of a grid, with every default filled in: what gets hashed and executed.
and Run =
    { Kind: RunKind
      Experiment: string
      /// readable, unique within its experiment: "lora-r4", "full", "lora-r4-s1", "pretrain"
      Name: string
      Model: BaseModel
      Dataset: DatasetView
      Task: Task
      Method: Method
      Rank: Rank option
      Seed: int
      Training: Training }

    /// The rank for C# (0 when the method has none).
    member r.RankValue = match r.Rank with Some k -> k.Value | None -> 0
    /// The full name used by --only patterns: "experiment/name".
    member r.Id = r.Experiment + "/" + r.Name
