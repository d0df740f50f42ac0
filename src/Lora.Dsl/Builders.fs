namespace Lora.Dsl

open System
open System.Runtime.CompilerServices

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

    // each operation's line, for errors (positions stay beside the value: SourceMarks)
    let private marked (from: obj) (fields: string list) (file: string option) (line: int option) value =
        SourceMarks.mark from fields (defaultArg file "") (defaultArg line 0) value

    /// A builder's checks: deferred inside the runner (which checks every value at once), else its
    /// errors at the lines of the operations that caused them.
    let private validated (locate: string -> SourceMark option) (prefix: string) errors value =
        if SourceMarks.deferred () then value
        else
            let place (e: SpecError) = SourceMarks.place (SourceMarks.below prefix e.Field |> Option.bind locate) e
            raiseIfInvalid (List.map place errors) value

    /// A combination of the adapters of runs of the experiment, by run name and weight (cat):
    /// combination "lora-mix" [ "lora-r4", 0.5; "lora-r8", 0.5 ] |> combinedBy CombinationType.Svd.
    let combination (name: string) (adapters: (string * float) list) : AdapterCombination =
        { Name = name; Adapters = adapters; Type = CombinationType.Cat; SvdRank = None }
    let combinedBy (t: CombinationType) (c: AdapterCombination) = { c with Type = t }
    /// svd's rank (the largest rank combined when not given).
    let svdRank (k: int) (c: AdapterCombination) = { c with SvdRank = Some k }

    /// `experiment { name "..."; model ...; dataset ...; methods [...]; ranks [...]; epochs 3 }`.
    /// Yield gives the defaults; every operation returns { state with ... }; Run validates.
    type ExperimentBuilder() =
        member _.Yield(_: unit) : Experiment =
            { Name = ""; Models = []; Datasets = []; Task = Classification; Methods = []; Ranks = []; Seeds = [ 0 ]
              Training = Training.Defaults; Tables = []; Sweeps = []; Variants = []; Combinations = [] }

        /// Checks everything that does not read the disk (paths are checked when a spec file is loaded).
        member _.Run(e: Experiment, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            // the variants' errors are at methods[Methods.Length + i], as in YAML
            let variants = [ for i in 0 .. e.Variants.Length - 1 -> sprintf "methods[%d]" (e.Methods.Length + i) ]
            let own = SourceMarks.get e
            let e = e |> marked e [ "" ] file line
            let e =
                match own.TryFind "variants" with
                | Some v -> e |> SourceMarks.mark e variants v.File v.Line
                | None -> e
            let at = if String.IsNullOrWhiteSpace e.Name then "experiment" else e.Name
            validated (SourceMarks.inExperiment e) at (Validation.experiment (fun _ -> true) at e) e

        [<CustomOperation("name")>]
        member _.Name(e: Experiment, value: string, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Name = value } |> marked e [ "name" ] file line
        [<CustomOperation("model")>]
        member _.Model(e: Experiment, value: BaseModel, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Models = [ value ] } |> marked e [ "models" ] file line
        [<CustomOperation("models")>]
        member _.Models(e: Experiment, value: BaseModel list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Models = value } |> marked e [ "models" ] file line
        [<CustomOperation("dataset")>]
        member _.Dataset(e: Experiment, value: DatasetView, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Datasets = [ value ] } |> marked e [ "datasets" ] file line
        [<CustomOperation("datasets")>]
        member _.Datasets(e: Experiment, value: DatasetView list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Datasets = value } |> marked e [ "datasets" ] file line
        [<CustomOperation("task")>]
        member _.Task(e: Experiment, value: Task, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Task = value } |> marked e [ "task" ] file line
        [<CustomOperation("methods")>]
        member _.Methods(e: Experiment, value: Method list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Methods = value } |> marked e [ "methods" ] file line
        [<CustomOperation("ranks")>]
        member _.Ranks(e: Experiment, value: int list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Ranks = value } |> marked e [ "ranks" ] file line
        [<CustomOperation("seeds")>]
        member _.Seeds(e: Experiment, value: int list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Seeds = value } |> marked e [ "seeds" ] file line
        [<CustomOperation("seed")>]
        member _.Seed(e: Experiment, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Seeds = [ value ] } |> marked e [ "seeds" ] file line
        [<CustomOperation("epochs")>]
        member _.Epochs(e: Experiment, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Epochs = value } } |> marked e [ "epochs" ] file line
        [<CustomOperation("batch")>]
        member _.Batch(e: Experiment, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Batch = value } } |> marked e [ "batch" ] file line
        [<CustomOperation("lr")>]
        member _.Lr(e: Experiment, value: float, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Lr = value } } |> marked e [ "lr" ] file line
        [<CustomOperation("warmup")>]
        member _.Warmup(e: Experiment, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Warmup = value } } |> marked e [ "warmup" ] file line
        [<CustomOperation("weightDecay")>]
        member _.WeightDecay(e: Experiment, value: float, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with WeightDecay = value } } |> marked e [ "weight_decay" ] file line
        [<CustomOperation("device")>]
        member _.Device(e: Experiment, value: Device, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Device = value } } |> marked e [ "device" ] file line
        [<CustomOperation("precision")>]
        member _.Precision(e: Experiment, value: Precision, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Precision = value } } |> marked e [ "precision" ] file line
        [<CustomOperation("imageSize")>]
        member _.ImageSize(e: Experiment, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with ImageSize = Some value } } |> marked e [ "image_size" ] file line
        /// Tables of the results: `tables [ table "dice" [ rows [ "model"; "mode" ]; cells [ "dice"; "miou" ] ] ]`.
        [<CustomOperation("tables")>]
        member _.Tables(e: Experiment, value: TableDecl list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Tables = value } |> marked e [ "tables" ] file line
        /// Methods with a name, option lists or settings of their own (see named, withLr); their runs follow those of methods.
        [<CustomOperation("variants")>]
        member _.Variants(e: Experiment, value: Variant list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Variants = value } |> marked e [ "variants" ] file line
        /// Adapters of this experiment's runs combined by weight: combine [ combination "mix" [ "lora-r4", 0.5; "lora-r8", 0.5 ] ].
        [<CustomOperation("combine")>]
        member _.Combine(e: Experiment, value: AdapterCombination list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Combinations = value } |> marked e [ "combine" ] file line
        /// A grid axis over one training setting: sweep [ Setting.Lr 1e-3; Setting.Lr 3e-3 ] (one per key).
        [<CustomOperation("sweep")>]
        member _.Sweep(e: Experiment, values: Setting list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Sweeps = e.Sweeps @ [ values ] } |> marked e (List.map Settings.key values) file line
        /// Any training settings: settings [ Setting.LabelSmoothing 0.1; Setting.HFlip true ].
        [<CustomOperation("settings")>]
        member _.Settings(e: Experiment, values: Setting list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = List.fold Settings.apply e.Training values } |> marked e (List.map Settings.key values) file line
        [<CustomOperation("schedule")>]
        member _.Schedule(e: Experiment, value: Schedule, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Schedule = value } } |> marked e [ "sched"; "decay_epochs"; "decay_rate" ] file line
        [<CustomOperation("minLr")>]
        member _.MinLr(e: Experiment, value: float, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with MinLr = value } } |> marked e [ "min_lr" ] file line
        /// The maximum gradient norm; None: no clipping.
        [<CustomOperation("clipGrad")>]
        member _.ClipGrad(e: Experiment, value: float option, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with ClipGrad = value } } |> marked e [ "clip_grad" ] file line
        [<CustomOperation("gradAccum")>]
        member _.GradAccum(e: Experiment, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with GradAccum = value } } |> marked e [ "gradient_accumulation_steps" ] file line
        [<CustomOperation("labelSmoothing")>]
        member _.LabelSmoothing(e: Experiment, value: float, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with LabelSmoothing = value } } |> marked e [ "label_smoothing" ] file line
        [<CustomOperation("hflip")>]
        member _.HFlip(e: Experiment, value: bool, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with HFlip = value } } |> marked e [ "hflip" ] file line
        [<CustomOperation("cropPadding")>]
        member _.CropPadding(e: Experiment, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with CropPadding = value } } |> marked e [ "crop_padding" ] file line
        /// timm's RandomResizedCrop with this smallest area fraction (0.08 in timm).
        [<CustomOperation("randomResizedCrop")>]
        member _.RandomResizedCrop(e: Experiment, value: float, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with RandomResizedCrop = Some value } } |> marked e [ "random_resized_crop" ] file line
        /// Stop after this many epochs without a better validation metric, and report the best epoch.
        [<CustomOperation("earlyStopping")>]
        member _.EarlyStopping(e: Experiment, patience: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Patience = Some patience; Select = BestEpoch } } |> marked e [ "early_stopping_patience"; "select" ] file line
        [<CustomOperation("select")>]
        member _.Select(e: Experiment, value: Selection, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Select = value } } |> marked e [ "select" ] file line
        /// FreshHead (the default) or ReuseHead: the base model's classifier when its shape fits.
        [<CustomOperation("headInit")>]
        member _.HeadInit(e: Experiment, value: HeadInit, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { e with Training = { e.Training with Head = value } } |> marked e [ "head" ] file line

    /// `pretrain { name "..."; model (zoo "vit" [...]); dataset ...; epochs 2 }`: trains a zoo model
    /// from scratch; `fromPretrain` makes it the base of an experiment.
    type PretrainBuilder() =
        member _.Yield(_: unit) : Pretrain =
            { Name = ""; Model = { Name = ""; Options = Map.empty }; Dataset = fashionMnist; Task = Classification; Seed = 0
              Training = Training.Defaults }

        member _.Run(p: Pretrain, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            let p = p |> marked p [ "" ] file line
            let at = if String.IsNullOrWhiteSpace p.Name then "pretrain" else p.Name
            validated (SourceMarks.nearest (SourceMarks.get p)) at (Validation.pretrain (fun _ -> true) at p) p

        [<CustomOperation("name")>]
        member _.Name(p: Pretrain, value: string, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Name = value } |> marked p [ "name" ] file line
        /// A zoo model (pretraining starts from random weights, so weights files and other pretrains do not apply).
        [<CustomOperation("model")>]
        member _.Model(p: Pretrain, value: BaseModel, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            match value with
            | Zoo z -> { p with Model = z } |> marked p [ "model" ] file line
            | other ->
                SourceMarks.report
                    { File = defaultArg file ""; Line = defaultArg line 0; Column = 0; Field = "pretrain.model"
                      Message = sprintf "a pretrain step trains a zoo model from scratch; '%s' is not a zoo model" (Grid.modelLabel other) }
                p
        [<CustomOperation("dataset")>]
        member _.Dataset(p: Pretrain, value: DatasetView, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Dataset = value } |> marked p [ "dataset" ] file line
        [<CustomOperation("task")>]
        member _.Task(p: Pretrain, value: Task, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Task = value } |> marked p [ "task" ] file line
        [<CustomOperation("seed")>]
        member _.Seed(p: Pretrain, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Seed = value } |> marked p [ "seed" ] file line
        [<CustomOperation("epochs")>]
        member _.Epochs(p: Pretrain, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with Epochs = value } } |> marked p [ "epochs" ] file line
        [<CustomOperation("batch")>]
        member _.Batch(p: Pretrain, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with Batch = value } } |> marked p [ "batch" ] file line
        [<CustomOperation("lr")>]
        member _.Lr(p: Pretrain, value: float, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with Lr = value } } |> marked p [ "lr" ] file line
        [<CustomOperation("warmup")>]
        member _.Warmup(p: Pretrain, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with Warmup = value } } |> marked p [ "warmup" ] file line
        [<CustomOperation("weightDecay")>]
        member _.WeightDecay(p: Pretrain, value: float, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with WeightDecay = value } } |> marked p [ "weight_decay" ] file line
        [<CustomOperation("device")>]
        member _.Device(p: Pretrain, value: Device, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with Device = value } } |> marked p [ "device" ] file line
        [<CustomOperation("precision")>]
        member _.Precision(p: Pretrain, value: Precision, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with Precision = value } } |> marked p [ "precision" ] file line
        [<CustomOperation("imageSize")>]
        member _.ImageSize(p: Pretrain, value: int, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = { p.Training with ImageSize = Some value } } |> marked p [ "image_size" ] file line
        /// Any training settings: settings [ Setting.LabelSmoothing 0.1; Setting.HFlip true ].
        [<CustomOperation("settings")>]
        member _.Settings(p: Pretrain, values: Setting list, [<CallerFilePath>] ?file: string, [<CallerLineNumber>] ?line: int) =
            { p with Training = List.fold Settings.apply p.Training values } |> marked p (List.map Settings.key values) file line

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
