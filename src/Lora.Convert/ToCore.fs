/// The one conversion from a spec's records to Lora.Core's objects, used by `run`, `validate`,
/// `summary` and `bench`: each default and limit of a method is decided here (or in Grid.resolveMethod
/// for those that depend on the rank), and matching on the spec's unions is exhaustive, so a new
/// method or option kind does not compile until it is converted.
module Lora.Conversion.ToCore

open System
open Lora.Dsl
open Lora.Core.Models
open Lora.Core.Tuning
open TorchSharp

/// A zoo model's options as model arguments (integers as int64, as the zoo reads them).
let modelArgs (z: ZooModel) : ModelArgs =
    z.Options
    |> Map.fold (fun (args: ModelArgs) key value ->
        let v: obj =
            match value with
            | Int i -> int64 i
            | Float f -> f
            | Text t -> t
            | Flag b -> b
        args.With(key, v)) ModelArgs.Empty

let private bias b =
    match b with
    | NoBias -> BiasMode.None
    | LoraOnly -> BiasMode.LoraOnly
    | AllBias -> BiasMode.All

/// The spec's word `head` is the model's own classifier (a segmenter's decoder).
let private saved (classifier: Lazy<string>) (names: string list) : string[] =
    names |> List.map (fun n -> if n = "head" then classifier.Value else n) |> Array.ofList

let private loraInit (i: Lora.Dsl.LoraInit) =
    match i with
    | PissaInit _ -> Lora.Core.Tuning.LoraInit.Pissa
    | OloraInit -> Lora.Core.Tuning.LoraInit.Olora
    | DefaultInit | GaussianInit -> Lora.Core.Tuning.LoraInit.Kaiming

let private lora (classifier: Lazy<string>) (rank: int) (o: Lora.Dsl.LoraOptions) (variant: LoraVariant) =
    LoraConfig(Targets = Array.ofList o.Targets, Rank = rank, Alpha = defaultArg o.Alpha (2.0 * float rank), Dropout = o.Dropout,
               UseRsLora = o.RsLora, Bias = bias o.Bias, ModulesToSave = saved classifier o.ModulesToSave, Variant = variant,
               InitGaussian = (o.Init = GaussianInit), Init = loraInit o.Init, PissaNiter = (match o.Init with PissaInit k -> Option.toNullable k | _ -> Nullable()),
               LoraPlusLrRatio = Option.toNullable o.LoraPlusRatio, FusedQkv = Array.ofList o.FusedQkv)

/// A method at a rank (None for the methods without one) on a model whose classifier is
/// `classifier` (asked for only when the method names `head`). The rank-dependent defaults are
/// Grid.resolveMethod's.
let methodOf (classifier: Lazy<string>) (rank: int option) (m: Method) : CoreMethod =
    let r = defaultArg rank 0
    match Grid.resolveMethod rank m with
    | Full -> CoreMethod.TrainAll
    | Head -> CoreMethod.TrainOnly [ classifier.Value ]
    | Lora o -> CoreMethod.Tune(lora classifier r o LoraVariant.Plain)
    | Dora o -> CoreMethod.Tune(lora classifier r o LoraVariant.Dora)
    | AdaLora(o, a) ->
        CoreMethod.Tune(
            AdaLoraConfig(Targets = Array.ofList o.Targets, TargetRank = r, InitRank = defaultArg a.InitRank (Grid.resolveInitRank r),
                          Alpha = defaultArg o.Alpha (2.0 * float r), Dropout = o.Dropout, UseRsLora = o.RsLora, Bias = bias o.Bias,
                          ModulesToSave = saved classifier o.ModulesToSave, TInit = a.TInit, TFinal = a.TFinal, DeltaT = a.DeltaT,
                          Beta1 = a.Beta1, Beta2 = a.Beta2, OrthRegWeight = a.OrthReg))
    | Adapter a ->
        // Start as the identity so the pretrained features are intact at step 0 (Houlsby et al.);
        // without a ratio, the grid's rank is the bottleneck width.
        match a.Ratio with
        | Some ratio ->
            CoreMethod.Tune(BottleneckAdapterConfig(Ratio = ratio, MlpScale = a.Scale, InitIdentity = true, ModulesToSave = saved classifier a.ModulesToSave))
        | None ->
            CoreMethod.Tune(BottleneckAdapterConfig(Width = r, MlpScale = a.Scale, InitIdentity = true, ModulesToSave = saved classifier a.ModulesToSave))
    | BitFit o -> CoreMethod.Tune(BitFitConfig(Targets = Array.ofList o.LayerTargets, ModulesToSave = saved classifier o.LayerModulesToSave))
    | LnTuning o -> CoreMethod.Tune(LnTuningConfig(Targets = Array.ofList o.LayerTargets, ModulesToSave = saved classifier o.LayerModulesToSave))
    | Ssf o -> CoreMethod.Tune(SsfConfig(Targets = Array.ofList o.LayerTargets, ModulesToSave = saved classifier o.LayerModulesToSave))
    | Ia3 o ->
        CoreMethod.Tune(Ia3Config(Targets = Array.ofList o.Ia3Targets, FeedforwardModules = Array.ofList o.Feedforward,
                                  ModulesToSave = saved classifier o.Ia3ModulesToSave))
    // alpha defaults to 2 × rank, as LoRA's
    | LoHa o ->
        CoreMethod.Tune(
            LoHaConfig(Targets = Array.ofList o.LycorisTargets, Rank = r, Alpha = defaultArg o.LycorisAlpha (2.0 * float r),
                       UseEffectiveConv2d = o.EffectiveConv2d, ModulesToSave = saved classifier o.LycorisModulesToSave))
    | LoKr o ->
        CoreMethod.Tune(
            LoKrConfig(Targets = Array.ofList o.LycorisTargets, Rank = r, Alpha = defaultArg o.LycorisAlpha (2.0 * float r),
                       UseEffectiveConv2d = o.EffectiveConv2d, ModulesToSave = saved classifier o.LycorisModulesToSave,
                       DecomposeBoth = o.DecomposeBoth, DecomposeFactor = o.DecomposeFactor))
    | Vpt o -> CoreMethod.Tune(VptConfig(Tokens = r, Deep = o.VptDeep, ModulesToSave = saved classifier o.VptModulesToSave))
    | AdaptFormer o ->
        CoreMethod.Tune(AdaptFormerConfig(Width = r, Scale = o.AdaptFormerScale, ModulesToSave = saved classifier o.AdaptFormerModulesToSave))
    | Convpass o -> CoreMethod.Tune(ConvpassConfig(Width = r, Scale = o.ConvpassScale, ModulesToSave = saved classifier o.ConvpassModulesToSave))
    | Fact o ->
        CoreMethod.Tune(
            FactConfig(Targets = Array.ofList o.FactTargets, Rank = r, Scale = o.FactScale,
                       Variant = (if o.FactVariant = FactTK then FactVariant.Tk else FactVariant.Tt), ModulesToSave = saved classifier o.FactModulesToSave))
    // the grid's rank is oft_block_size unless blocks (PEFT's r) is given
    | Oft o ->
        CoreMethod.Tune(
            OftConfig(Targets = Array.ofList o.OftTargets, Rank = defaultArg o.Blocks 0, BlockSize = (if o.Blocks.IsSome then 0 else r),
                      Coft = o.Coft, Eps = o.Eps, BlockShare = o.BlockShare, ModuleDropout = o.OftModuleDropout,
                      UseCayleyNeumann = o.CayleyNeumann, ModulesToSave = saved classifier o.OftModulesToSave))
    // the grid's rank is boft_block_size unless blocks (boft_block_num) is given
    | Boft o ->
        CoreMethod.Tune(
            BoftConfig(Targets = Array.ofList o.BoftTargets, BlockNum = defaultArg o.BoftBlocks 0, BlockSize = (if o.BoftBlocks.IsSome then 0 else r),
                       ButterflyFactor = o.Butterfly, Dropout = o.BoftDropout, ModulesToSave = saved classifier o.BoftModulesToSave))
    | Hra o -> CoreMethod.Tune(HraConfig(Targets = Array.ofList o.HraTargets, Rank = r, ApplyGs = o.ApplyGs, ModulesToSave = saved classifier o.HraModulesToSave))
    | Vera o ->
        CoreMethod.Tune(
            VeraConfig(Targets = Array.ofList o.VeraTargets, Rank = r, ModulesToSave = saved classifier o.VeraModulesToSave,
                       DInitial = o.DInitial, ProjectionPrngKey = o.ProjectionPrngKey))

/// A run's method on its model.
let ofRun (run: Run) (model: torch.nn.Module) : CoreMethod =
    methodOf (lazy (Zoo.Classifier model)) (run.Rank |> Option.map (fun k -> k.Value)) run.Method

/// Freezes every parameter but those under a module matching one of the patterns (the module or
/// one of its ancestors matches, by ModulePattern's rules); returns how many elements train.
let trainOnly (modules: string seq) (model: torch.nn.Module) : int64 =
    let modules = List.ofSeq modules
    let mutable trained = 0L
    for struct (name, p) in model.named_parameters () do
        let parts = name.Split '.'
        let ancestors = [ for i in 1 .. parts.Length - 1 -> String.Join(".", parts, 0, i) ]
        p.requires_grad <- ancestors |> List.exists (fun path -> modules |> List.exists (fun m -> ModulePattern.Matches(m, path)))
        if p.requires_grad then trained <- trained + p.numel ()
    trained

/// Applies the method to the model; the tuned model, or null when the method adds no adapter.
let apply (m: CoreMethod) (model: torch.nn.Module) : TunedModel =
    match m with
    | CoreMethod.TrainAll -> null
    | CoreMethod.TrainOnly modules ->
        if trainOnly modules model = 0L then
            raise (ArgumentException(sprintf "no parameter of this %s is under %s; name the modules to train" (model.GetType().Name) (String.Join(", ", modules))))
        null
    | CoreMethod.Tune c -> Tuner.Apply(model, c)

/// Every problem applying the method to the model would meet, without changing it (`validate`
/// runs it on a meta-device model).
let check (m: CoreMethod) (model: torch.nn.Module) : string list =
    match m with
    | CoreMethod.TrainAll -> []
    | CoreMethod.TrainOnly modules ->
        let any =
            model.named_modules ()
            |> Seq.exists (fun struct (path, _) -> path <> "" && modules |> List.exists (fun p -> ModulePattern.Matches(p, path)))
        if any then [] else [ sprintf "no module of this %s matches %s" (model.GetType().Name) (String.Join(", ", modules)) ]
    | CoreMethod.Tune c ->
        try List.ofSeq (Tuner.Match(model, c).Errors)
        with :? ArgumentException as e -> [ e.Message ]

/// A method given on the command line (`lora summary --method`, a `lora bench` preset) in a spec's
/// YAML vocabulary ("lora", "adalora: { tinit: 10 }"), checked as a spec's method is, with the
/// rank-dependent defaults filled in.
let parseMethod (text: string) (rank: int option) : Result<Method, string list> =
    match YamlSpec.method text with
    | Error e -> Error e
    | Ok m ->
        match Validation.method "method" (Option.toList rank) m with
        | [] -> Ok(Grid.resolveMethod rank m)
        | errors -> Error [ for e in errors -> sprintf "%s: %s" e.Field e.Message ]

/// What building the zoo model from its options on the meta device says: each option it never asks
/// for (a misspelling, or one of another family) and what its constructor refuses (num_heads not
/// dividing embed_dim, ...), placed at the option the message names.
let modelProblems (z: ZooModel) : (string * string) list =
    if not (ZooNames.isKnown z.Name) then []
    else
        // the options a model asks for: those its defaults' build asks for, and those the given options' build does
        let build (args: ModelArgs) =
            try
                use _model = Zoo.Create(z.Name, args, torch.META)
                None
            with :? ArgumentException as e -> Some e.Message
        let defaults = ModelArgs.Empty
        build defaults |> ignore
        let args = modelArgs z
        let refused = build args
        let known = Seq.append defaults.Asked args.Asked |> Seq.distinct |> List.ofSeq |> List.sort
        let unknown =
            [ for k in z.Options.Keys do
                if not (List.contains k known) then
                    yield k, sprintf "%s takes no option '%s'%s; its options: %s" z.Name k (ZooNames.didYouMean known k) (String.Join(", ", known)) ]
        match unknown, refused with
        | [], Some message ->
            let named = z.Options.Keys |> Seq.filter (fun k -> message.Contains k) |> Seq.sortBy (fun k -> message.LastIndexOf k) |> Seq.tryLast
            [ defaultArg named "", message ]
        | unknown, _ -> unknown

/// A spec checked as Spec.check does, with every zoo model also built from its options on the meta
/// device (modelProblems): what every command that loads a spec uses.
let checkSpec (path: string) : SpecCheck = Validation.withModelCheck modelProblems (fun () -> Spec.check path)

/// An ONNX file as a module; num_classes (always set for a run: the data set's class count) gives it a new head.
let importOnnx (path: string) (args: ModelArgs) : Lora.Core.Onnx.OnnxModule =
    let classes = if args.Has "num_classes" then Nullable(args.Long("num_classes", 0L)) else Nullable()
    new Lora.Core.Onnx.OnnxModule(Lora.Core.Onnx.OnnxGraph.Read path, Lora.Core.Onnx.OnnxImportOptions(NumClasses = classes))

/// Every problem the run's method would meet on its model, found on the meta device (no memory,
/// no data): `lora validate` reports them before any run starts. The class count is the spec's
/// class subset when it has one (only the classifier's shape depends on it).
/// Each problem with the part of the run it concerns: "model" (building it) or "method" (applying
/// the method), so that `validate` places it at that entry of the spec.
let checkRunAt (run: Run) : (string * string) list =
    let zoo = run.Model.ZooModel
    let classes = match run.Dataset.Classes with Some cs -> cs.Length | None -> 10
    let args = (modelArgs zoo).With("num_classes", int64 (max 1 classes))
    let built =
        try
            match run.Model with
            // an imported graph is built from its file (on the CPU: its weights are initializers)
            | Onnx _ -> Ok(importOnnx zoo.Name args :> torch.nn.Module)
            | _ -> Ok(Zoo.Create(zoo.Name, args, torch.META))
        with
        | :? ArgumentException as e -> Error e.Message
        | :? Lora.Core.Onnx.OnnxImportException as e -> Error e.Message
    match built with
    | Error message -> [ "model", message ]
    | Ok model ->
        use model = model
        try [ for message in check (ofRun run model) model -> "method", message ]
        with :? ArgumentException as e -> [ "method", e.Message ]

let checkRun (run: Run) : string list = checkRunAt run |> List.map snd

/// checkSpec with every run also checked as the core would check it when it starts (checkRunAt),
/// each problem at its method or model entry: `lora validate`.
let validateSpec (path: string) : SpecCheck =
    Validation.withRunCheck checkRunAt (fun () -> checkSpec path)
