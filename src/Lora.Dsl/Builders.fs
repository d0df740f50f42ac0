namespace Lora.Dsl

open System

/// The F# vocabulary of a spec: `experiment { ... }`, `pretrain { ... }` and the values they take.
[<AutoOpen>]
module Builders =
    // methods with PEFT's defaults
    let full = Full
    let head = Head
    let lora = Lora LoraOptions.Defaults
    let dora = Dora LoraOptions.Defaults
    let adalora = AdaLora(LoraOptions.Defaults, AdaLoraOptions.Defaults)
    let adapter = Adapter AdapterOptions.Defaults
    let bitfit = BitFit LayerOptions.Defaults
    let lnTuning = LnTuning LayerOptions.Defaults
    let ia3 = Ia3 Ia3Options.Defaults
    let ssf = Ssf LayerOptions.Defaults
    let loha = LoHa LycorisOptions.Defaults
    let lokr = LoKr LycorisOptions.Defaults
    let vera = Vera VeraOptions.Defaults
    let adaptformer = AdaptFormer AdaptFormerOptions.Defaults
    let vptShallow = Vpt VptOptions.Defaults
    let vptDeep = Vpt { VptOptions.Defaults with VptDeep = true }
    let convpass = Convpass ConvpassOptions.Defaults
    let factTT = Fact FactOptions.Defaults
    let factTK = Fact { FactOptions.Defaults with FactVariant = FactTK }

    // LoRA options as modifiers of lora/dora: lora |> loraInit OloraInit |> loraPlus 16.0, lora |> fusedQkv [ "q"; "v" ]
    let private mapLora (f: LoraOptions -> LoraOptions) (m: Method) =
        match m with
        | Lora o -> Lora(f o)
        | Dora o -> Dora(f o)
        | _ -> invalidArg "m" (sprintf "%s has no LoRA options (init, LoRA+, fused_qkv are lora's and dora's)" m.Name)
    /// init_lora_weights: GaussianInit, PissaInit None, PissaInit(Some 4) (pissa_niter_4), OloraInit.
    let loraInit (i: LoraInit) (m: Method) = mapLora (fun o -> { o with Init = i }) m
    /// LoRA+: lora_B trains at ratio × lr.
    let loraPlus (ratio: float) (m: Method) = mapLora (fun o -> { o with LoraPlusRatio = Some ratio }) m
    /// q/v-only LoRA on fused qkv Linears: the parts (q, k, v) adapted.
    let fusedQkv (parts: string list) (m: Method) = mapLora (fun o -> { o with FusedQkv = parts }) m
    let oft = Oft OftOptions.Defaults
    let boft = Boft BoftOptions.Defaults
    let hra = Hra HraOptions.Defaults

    /// A zoo model with options: zoo "vit" [ "img_size", Int 28; "patch_size", Int 4 ].
    let zoo (name: string) (options: (string * OptionValue) list) = Zoo { Name = name; Options = Map.ofList options }

    /// A zoo architecture initialised from a timm-format safetensors file.
    let weights (name: string) (options: (string * OptionValue) list) (path: string) =
        Weights({ Name = name; Options = Map.ofList options }, path)

    /// An ONNX graph imported as a module (path relative to the script's folder), hashed by its content.
    let onnx (path: string) = Onnx { Name = path; Options = Map.empty }

    /// An ONNX graph with options (num_classes for a new head is set from the data set).
    let onnxWith (path: string) (options: (string * OptionValue) list) = Onnx { Name = path; Options = Map.ofList options }

    /// Tune from the model a pretrain step produces.
    let fromPretrain (p: Pretrain) = FromPretrain p

    // data sources
    let fashionMnist = DatasetView.Of(FashionMnist None)
    let fashionMnistAt path = DatasetView.Of(FashionMnist(Some path))
    let cifar path = DatasetView.Of(Cifar path)
    let imageFolder path = DatasetView.Of(ImageFolder path)
    let segmentationPairs path = DatasetView.Of(SegmentationPairs path)
    let composedSegmentation canvas objects = DatasetView.Of(Composed { Canvas = canvas; Objects = objects; Path = None })

    // dataset view modifiers: fashionMnist |> classes [5..9] |> limit 1000 200
    let classes (cs: int list) (d: DatasetView) = { d with Classes = Some cs }
    let shots (n: int) (d: DatasetView) = { d with ShotsPerClass = Some n }
    let limit (train: int) (validation: int) (d: DatasetView) = { d with LimitTrain = Some train; LimitVal = Some validation }
    let valFraction (f: float) (d: DatasetView) = { d with ValFraction = f }
    let dataSeed (s: int) (d: DatasetView) = { d with Seed = s }

    // method variants: lora |> named "lora-qkv" |> withLr 3e-3
    /// A method under a name of its own in run names and tables.
    let named (name: string) (m: Method) : Variant = { Name = Some name; Choices = [ [], m ]; Training = [] }
    /// A method as a variant under its own name (to give it settings of its own).
    let variant (m: Method) : Variant = { Name = None; Choices = [ [], m ]; Training = [] }
    /// Training settings of this variant alone (each replaces the experiment's setting or list of that key).
    let withSettings (settings: Setting list) (v: Variant) = { v with Training = v.Training @ [ for s in settings -> [ s ] ] }
    /// A list of values of one training setting for this variant alone: a grid axis.
    let withSweep (values: Setting list) (v: Variant) = { v with Training = v.Training @ [ values ] }
    let withLr (lr: float) (v: Variant) = withSettings [ Setting.Lr lr ] v
    let withEpochs (epochs: int) (v: Variant) = withSettings [ Setting.Epochs epochs ] v
    let withWeightDecay (wd: float) (v: Variant) = withSettings [ Setting.WeightDecay wd ] v

    let private raiseIfInvalid errors value =
        match errors with
        | [] -> value
        | errs -> raise (SpecException errs)

    /// `experiment { name "..."; model ...; dataset ...; methods [...]; ranks [...]; epochs 3 }`.
    /// Yield gives the defaults; every operation returns { state with ... }; Run validates.
    type ExperimentBuilder() =
        member _.Yield(_: unit) : Experiment =
            { Name = ""; Models = []; Datasets = []; Task = Classification; Methods = []; Ranks = []; Seeds = [ 0 ]
              Training = Training.Defaults; Tables = []; Sweeps = []; Variants = [] }

        /// Checks everything that does not read the disk (paths are checked when a spec file is loaded).
        member _.Run(e: Experiment) =
            let at = if String.IsNullOrWhiteSpace e.Name then "experiment" else e.Name
            raiseIfInvalid (Validation.experiment (fun _ -> true) at e) e

        [<CustomOperation("name")>]
        member _.Name(e: Experiment, value: string) = { e with Name = value }
        [<CustomOperation("model")>]
        member _.Model(e: Experiment, value: BaseModel) = { e with Models = [ value ] }
        [<CustomOperation("models")>]
        member _.Models(e: Experiment, value: BaseModel list) = { e with Models = value }
        [<CustomOperation("dataset")>]
        member _.Dataset(e: Experiment, value: DatasetView) = { e with Datasets = [ value ] }
        [<CustomOperation("datasets")>]
        member _.Datasets(e: Experiment, value: DatasetView list) = { e with Datasets = value }
        [<CustomOperation("task")>]
        member _.Task(e: Experiment, value: Task) = { e with Task = value }
        [<CustomOperation("methods")>]
        member _.Methods(e: Experiment, value: Method list) = { e with Methods = value }
        [<CustomOperation("ranks")>]
        member _.Ranks(e: Experiment, value: int list) = { e with Ranks = value }
        [<CustomOperation("seeds")>]
        member _.Seeds(e: Experiment, value: int list) = { e with Seeds = value }
        [<CustomOperation("seed")>]
        member _.Seed(e: Experiment, value: int) = { e with Seeds = [ value ] }
        [<CustomOperation("epochs")>]
        member _.Epochs(e: Experiment, value: int) = { e with Training = { e.Training with Epochs = value } }
        [<CustomOperation("batch")>]
        member _.Batch(e: Experiment, value: int) = { e with Training = { e.Training with Batch = value } }
        [<CustomOperation("lr")>]
        member _.Lr(e: Experiment, value: float) = { e with Training = { e.Training with Lr = value } }
        [<CustomOperation("warmup")>]
        member _.Warmup(e: Experiment, value: int) = { e with Training = { e.Training with Warmup = value } }
        [<CustomOperation("weightDecay")>]
        member _.WeightDecay(e: Experiment, value: float) = { e with Training = { e.Training with WeightDecay = value } }
        [<CustomOperation("device")>]
        member _.Device(e: Experiment, value: Device) = { e with Training = { e.Training with Device = value } }
        [<CustomOperation("precision")>]
        member _.Precision(e: Experiment, value: Precision) = { e with Training = { e.Training with Precision = value } }
        [<CustomOperation("imageSize")>]
        member _.ImageSize(e: Experiment, value: int) = { e with Training = { e.Training with ImageSize = Some value } }
        /// Tables of the results: `tables [ table "dice" [ rows [ "model"; "mode" ]; cells [ "dice"; "miou" ] ] ]`.
        [<CustomOperation("tables")>]
        member _.Tables(e: Experiment, value: TableDecl list) = { e with Tables = value }
        /// Methods with a name, option lists or settings of their own (see named, withLr); their runs follow those of methods.
        [<CustomOperation("variants")>]
        member _.Variants(e: Experiment, value: Variant list) = { e with Variants = value }
        /// A grid axis over one training setting: sweep [ Setting.Lr 1e-3; Setting.Lr 3e-3 ] (one per key).
        [<CustomOperation("sweep")>]
        member _.Sweep(e: Experiment, values: Setting list) = { e with Sweeps = e.Sweeps @ [ values ] }
        /// Any training settings: settings [ Setting.LabelSmoothing 0.1; Setting.HFlip true ].
        [<CustomOperation("settings")>]
        member _.Settings(e: Experiment, values: Setting list) = { e with Training = List.fold Settings.apply e.Training values }
        [<CustomOperation("schedule")>]
        member _.Schedule(e: Experiment, value: Schedule) = { e with Training = { e.Training with Schedule = value } }
        [<CustomOperation("minLr")>]
        member _.MinLr(e: Experiment, value: float) = { e with Training = { e.Training with MinLr = value } }
        /// The maximum gradient norm; None: no clipping.
        [<CustomOperation("clipGrad")>]
        member _.ClipGrad(e: Experiment, value: float option) = { e with Training = { e.Training with ClipGrad = value } }
        [<CustomOperation("gradAccum")>]
        member _.GradAccum(e: Experiment, value: int) = { e with Training = { e.Training with GradAccum = value } }
        [<CustomOperation("labelSmoothing")>]
        member _.LabelSmoothing(e: Experiment, value: float) = { e with Training = { e.Training with LabelSmoothing = value } }
        [<CustomOperation("hflip")>]
        member _.HFlip(e: Experiment, value: bool) = { e with Training = { e.Training with HFlip = value } }
        [<CustomOperation("cropPadding")>]
        member _.CropPadding(e: Experiment, value: int) = { e with Training = { e.Training with CropPadding = value } }
        /// timm's RandomResizedCrop with this smallest area fraction (0.08 in timm).
        [<CustomOperation("randomResizedCrop")>]
        member _.RandomResizedCrop(e: Experiment, value: float) = { e with Training = { e.Training with RandomResizedCrop = Some value } }
        /// Stop after this many epochs without a better validation metric, and report the best epoch.
        [<CustomOperation("earlyStopping")>]
        member _.EarlyStopping(e: Experiment, patience: int) = { e with Training = { e.Training with Patience = Some patience; Select = BestEpoch } }
        [<CustomOperation("select")>]
        member _.Select(e: Experiment, value: Selection) = { e with Training = { e.Training with Select = value } }
        /// FreshHead (the default) or ReuseHead: the base model's classifier when its shape fits.
        [<CustomOperation("headInit")>]
        member _.HeadInit(e: Experiment, value: HeadInit) = { e with Training = { e.Training with Head = value } }

    /// `pretrain { name "..."; model (zoo "vit" [...]); dataset ...; epochs 2 }`: trains a zoo model
    /// from scratch; `fromPretrain` makes it the base of an experiment.
    type PretrainBuilder() =
        member _.Yield(_: unit) : Pretrain =
            { Name = ""; Model = { Name = ""; Options = Map.empty }; Dataset = fashionMnist; Task = Classification; Seed = 0
              Training = Training.Defaults }

        member _.Run(p: Pretrain) =
            let at = if String.IsNullOrWhiteSpace p.Name then "pretrain" else p.Name
            raiseIfInvalid (Validation.pretrain (fun _ -> true) at p) p

        [<CustomOperation("name")>]
        member _.Name(p: Pretrain, value: string) = { p with Name = value }
        /// A zoo model (pretraining starts from random weights, so weights files and other pretrains do not apply).
        [<CustomOperation("model")>]
        member _.Model(p: Pretrain, value: BaseModel) =
            match value with
            | Zoo z -> { p with Model = z }
            | other -> invalidArg "model" (sprintf "a pretrain step trains a zoo model from scratch; '%s' is not a zoo model" (Grid.modelLabel other))
        [<CustomOperation("dataset")>]
        member _.Dataset(p: Pretrain, value: DatasetView) = { p with Dataset = value }
        [<CustomOperation("task")>]
        member _.Task(p: Pretrain, value: Task) = { p with Task = value }
        [<CustomOperation("seed")>]
        member _.Seed(p: Pretrain, value: int) = { p with Seed = value }
        [<CustomOperation("epochs")>]
        member _.Epochs(p: Pretrain, value: int) = { p with Training = { p.Training with Epochs = value } }
        [<CustomOperation("batch")>]
        member _.Batch(p: Pretrain, value: int) = { p with Training = { p.Training with Batch = value } }
        [<CustomOperation("lr")>]
        member _.Lr(p: Pretrain, value: float) = { p with Training = { p.Training with Lr = value } }
        [<CustomOperation("warmup")>]
        member _.Warmup(p: Pretrain, value: int) = { p with Training = { p.Training with Warmup = value } }
        [<CustomOperation("weightDecay")>]
        member _.WeightDecay(p: Pretrain, value: float) = { p with Training = { p.Training with WeightDecay = value } }
        [<CustomOperation("device")>]
        member _.Device(p: Pretrain, value: Device) = { p with Training = { p.Training with Device = value } }
        [<CustomOperation("precision")>]
        member _.Precision(p: Pretrain, value: Precision) = { p with Training = { p.Training with Precision = value } }
        [<CustomOperation("imageSize")>]
        member _.ImageSize(p: Pretrain, value: int) = { p with Training = { p.Training with ImageSize = Some value } }
        /// Any training settings: settings [ Setting.LabelSmoothing 0.1; Setting.HFlip true ].
        [<CustomOperation("settings")>]
        member _.Settings(p: Pretrain, values: Setting list) = { p with Training = List.fold Settings.apply p.Training values }

    /// One part of a table declaration: `table "dice" [ Table.rows [ "model" ]; Table.cells [ "dice" ]; Table.baseline "lora" ]`.
    type TablePart = TableDecl -> TableDecl

    /// A table declaration from its parts (the same record YAML's tables: entries read into).
    let table (name: string) (parts: TablePart list) = parts |> List.fold (fun t f -> f t) (TableDecl.Of name)

    /// The parts of a table declaration.
    [<RequireQualifiedAccess>]
    module Table =
        /// Row axes: "method", "mode", "rank", "model", "backbone", "dataset", "variant", "seed", "config.<field>".
        let rows (axes: string list) : TablePart = fun t -> { t with Rows = axes |> List.map TableAxis.Of }
        /// Column axes (then one cell): one column per value.
        let columns (axes: string list) : TablePart = fun t -> { t with Columns = axes |> List.map TableAxis.Of }
        /// Cells by metric name, mean ± std over seeds in the metric's own format.
        let cells (metrics: string list) : TablePart = fun t -> { t with Cells = metrics |> List.map TableCell.Of }
        /// Cells given in full: { TableCell.Of "dice" with Aggregate = Mean; Format = Some "F3"; Header = Some "DICE" }.
        let cellsOf (cs: TableCell list) : TablePart = fun t -> { t with Cells = cs }
        /// Headers of row or column axes: headers [ "model", "Baseline" ].
        let headers (pairs: (string * string) list) : TablePart = fun t ->
            let rename (a: TableAxis) = match List.tryFind (fun (k, _) -> k = a.Axis) pairs with Some(_, h) -> { a with Header = Some h } | None -> a
            { t with Rows = List.map rename t.Rows; Columns = List.map rename t.Columns }
        let caption (text: string) : TablePart = fun t -> { t with Caption = Some text }
        let filter (axis: string) (values: string list) : TablePart = fun t -> { t with Filters = t.Filters @ [ axis, values ] }
        let orderBy (axes: string list) : TablePart = fun t -> { t with Order = axes }
        let baseline (methodOrVariant: string) : TablePart = fun t -> { t with Baseline = Some methodOrVariant }

    let experiment = ExperimentBuilder()
    let pretrain = PretrainBuilder()
