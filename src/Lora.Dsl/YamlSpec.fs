namespace Lora.Dsl

open System
open System.Collections.Generic
open System.Globalization
open System.IO
open System.Text
open YamlDotNet.Core
open YamlDotNet.RepresentationModel

/// YAML specs: the same schema as the F# builders, read into the same records.
///
/// The reader walks YamlDotNet's node tree rather than deserialising into DTO classes: a deserialiser
/// stops at the first problem and forgets where values were, while a spec must report every problem
/// with its line and column. Paths ("experiments[0].ranks[1]") tie record fields back to YAML marks,
/// so the checks in Validation (shared with the F# builders) also report lines and columns.
module YamlSpec =

    /// Line and column (1-based) of every value read, by field path.
    type Marks = IReadOnlyDictionary<string, int * int>

    /// A step declared under the top-level pretrain: list, at its path ("pretrain[1]").
    type DeclaredPretrain = { Path: string; Step: Pretrain; Used: bool }

    /// Everything read from a YAML spec: the experiments, the declared pretrain steps (used or not),
    /// the structural errors and the marks of every value read.
    type Read =
        { Experiments: Experiment list
          Pretrains: DeclaredPretrain list
          Errors: SpecError list
          Marks: Marks }

    type private Reader(file: string) =
        let errors = ResizeArray<SpecError>()
        let marks = Dictionary<string, int * int>()
        let referenced = HashSet<string>()
        member _.Errors = errors
        member _.Marks = marks
        /// Names of the declared pretrain steps that some model refers to.
        member _.Referenced = referenced
        member _.Error(node: YamlNode, field: string, message: string) =
            errors.Add { File = file; Line = int node.Start.Line; Column = int node.Start.Column; Field = field; Message = message }
        member _.Mark(path: string, node: YamlNode) = marks.[path] <- (int node.Start.Line, int node.Start.Column)

    let private isNullNode (n: YamlNode) =
        match n with
        | :? YamlScalarNode as s -> s.Style = ScalarStyle.Plain && (s.Value = "" || s.Value = "~" || s.Value = "null" || isNull s.Value)
        | _ -> false

    let private kindOf (n: YamlNode) =
        match n with
        | :? YamlScalarNode as s -> sprintf "'%s'" s.Value
        | :? YamlSequenceNode -> "a list"
        | :? YamlMappingNode -> "a mapping"
        | _ -> "something else"

    let private join (path: string) (key: string) = if path = "" then key else path + "." + key

    /// The keys of a mapping; unknown keys are errors (with suggestions), `notHere` explains keys
    /// that exist elsewhere (e.g. an adapter option under lora).
    let private fields (r: Reader) (path: string) (node: YamlNode) (allowed: string list) (notHere: string -> string option) =
        r.Mark(path, node)
        match node with
        | :? YamlMappingNode as m ->
            [ for KeyValue(k, v) in m.Children do
                  match k with
                  | :? YamlScalarNode as ks when List.contains ks.Value allowed ->
                      r.Mark(join path ks.Value, v)
                      yield ks.Value, v
                  | :? YamlScalarNode as ks ->
                      let why =
                          match notHere ks.Value with
                          | Some reason -> reason
                          | None ->
                              sprintf "unknown field '%s'%s; allowed here: %s" ks.Value (ZooNames.didYouMean allowed ks.Value)
                                  (String.concat ", " allowed)
                      r.Error(k, join path ks.Value, why)
                  | _ -> r.Error(k, path, "a field name must be a plain word") ]
            |> Map.ofList
        | _ ->
            r.Error(node, path, sprintf "expected a mapping with fields (%s), got %s" (String.concat ", " allowed) (kindOf node))
            Map.empty

    let private scalar (r: Reader) path (node: YamlNode) (what: string) (parse: string -> 'a option) : 'a option =
        match node with
        | :? YamlScalarNode as s when s.Style = ScalarStyle.Plain || typeof<'a> = typeof<string> ->
            match parse s.Value with
            | Some v -> Some v
            | None -> r.Error(node, path, sprintf "expected %s, got '%s'" what s.Value); None
        | _ -> r.Error(node, path, sprintf "expected %s, got %s" what (kindOf node)); None

    let private parseInt (s: string) = match Int32.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) with | true, v -> Some v | _ -> None
    let private parseFloat (s: string) = match Double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture) with | true, v when Double.IsFinite v -> Some v | _ -> None
    let private parseBool (s: string) = match s with "true" -> Some true | "false" -> Some false | _ -> None

    let private readInt r path n = scalar r path n "an integer" parseInt
    let private readFloat r path n = scalar r path n "a number" parseFloat
    let private readBool r path n = scalar r path n "true or false" parseBool
    let private readStr r path n = scalar r path n "a string" Some

    let private choice (r: Reader) path (n: YamlNode) (options: (string * 'a) list) =
        match readStr r path n with
        | Some s ->
            match List.tryFind (fun (k, _) -> k = s) options with
            | Some(_, v) -> Some v
            | None ->
                let names = List.map fst options
                r.Error(n, path, sprintf "unknown value '%s'%s; expected one of %s" s (ZooNames.didYouMean names s) (String.concat ", " names))
                None
        | None -> None

    let private list (r: Reader) path (n: YamlNode) (item: string -> YamlNode -> 'a option) =
        match n with
        | :? YamlSequenceNode as s -> s.Children |> Seq.mapi (fun i c -> let p = sprintf "%s[%d]" path i in r.Mark(p, c); item p c) |> Seq.choose id |> List.ofSeq |> Some
        | _ -> r.Error(n, path, sprintf "expected a list, got %s" (kindOf n)); None

    /// Read an optional field with `f`, None when absent or null.
    let private opt (fs: Map<string, YamlNode>) path key f =
        match Map.tryFind key fs with
        | Some n when not (isNullNode n) -> f (path + "." + key) n
        | _ -> None

    let private tasks = [ "classification", Classification; "segmentation", Segmentation ]
    let private devices = [ "cpu", Cpu; "cuda", Cuda ]
    let private precisions = [ "fp32", Fp32; "bf16", Bf16; "fp16", Fp16 ]
    let private biases = [ "none", NoBias; "lora_only", LoraOnly; "all", AllBias ]

    /// `init:` of lora/dora: default, gaussian, pissa, pissa_niter_K, olora (PEFT's init_lora_weights).
    let private loraInit (r: Reader) path (n: YamlNode) =
        let names = [ "default"; "gaussian"; "pissa"; "pissa_niter_K"; "olora" ]
        match readStr r path n with
        | Some "default" -> Some DefaultInit
        | Some "gaussian" -> Some GaussianInit
        | Some "pissa" -> Some(PissaInit None)
        | Some "olora" -> Some OloraInit
        | Some s when s.StartsWith "pissa_niter_" ->
            match Int32.TryParse(s.Substring "pissa_niter_".Length) with
            | true, k when k >= 1 -> Some(PissaInit(Some k))
            | _ -> r.Error(n, path, sprintf "init '%s': pissa_niter_K needs a whole number of subspace iterations K ≥ 1 (e.g. pissa_niter_4)" s); None
        | Some s -> r.Error(n, path, sprintf "unknown init '%s'%s; expected one of %s" s (ZooNames.didYouMean names s) (String.concat ", " names)); None
        | None -> None

    let private schedules = [ "cosine", Cosine; "linear", Linear; "constant", Constant; "step", Step(0, 0.1) ]
    let private selections = [ "last", LastEpoch; "best", BestEpoch ]
    let private heads = [ "fresh", FreshHead; "reuse", ReuseHead ]

    /// The keys that each read as one Setting (a list of values: a grid axis).
    let private settingKeys =
        [ "epochs"; "batch"; "lr"; "warmup"; "weight_decay"; "device"; "precision"; "image_size"; "sched"; "min_lr"; "clip_grad"
          "gradient_accumulation_steps"; "label_smoothing"; "hflip"; "crop_padding"; "random_resized_crop"; "early_stopping_patience"
          "select"; "head" ]

    let private trainingKeys = settingKeys @ [ "decay_epochs"; "decay_rate" ]

    /// "none" (or false) for an option that can be off, else the value.
    let private orNone (r: Reader) path (n: YamlNode) (read: Reader -> string -> YamlNode -> 'a option) : 'a option option =
        match n with
        | :? YamlScalarNode as s when s.Style = ScalarStyle.Plain && (s.Value = "none" || s.Value = "false") -> Some None
        | _ -> read r path n |> Option.map Some

    let private settingOf (r: Reader) path (key: string) (n: YamlNode) : Setting option =
        match key with
        | "epochs" -> readInt r path n |> Option.map Setting.Epochs
        | "batch" -> readInt r path n |> Option.map Setting.Batch
        | "lr" -> readFloat r path n |> Option.map Setting.Lr
        | "warmup" -> readInt r path n |> Option.map Setting.Warmup
        | "weight_decay" -> readFloat r path n |> Option.map Setting.WeightDecay
        | "device" -> choice r path n devices |> Option.map Setting.Device
        | "precision" -> choice r path n precisions |> Option.map Setting.Precision
        | "image_size" -> readInt r path n |> Option.map Setting.ImageSize
        | "sched" -> choice r path n schedules |> Option.map Setting.Schedule
        | "min_lr" -> readFloat r path n |> Option.map Setting.MinLr
        | "clip_grad" -> orNone r path n readFloat |> Option.map Setting.ClipGrad
        | "gradient_accumulation_steps" -> readInt r path n |> Option.map Setting.GradAccum
        | "label_smoothing" -> readFloat r path n |> Option.map Setting.LabelSmoothing
        | "hflip" -> readBool r path n |> Option.map Setting.HFlip
        | "crop_padding" -> readInt r path n |> Option.map Setting.CropPadding
        | "random_resized_crop" -> orNone r path n readFloat |> Option.map Setting.RandomResizedCrop
        | "early_stopping_patience" -> orNone r path n readInt |> Option.map Setting.Patience
        | "select" -> choice r path n selections |> Option.map Setting.Select
        | _ -> choice r path n heads |> Option.map Setting.Head

    /// The training keys of a mapping as settings, one list per key given (a YAML list of values: a
    /// grid axis; one value: a list of one). sched: step takes decay_epochs and decay_rate (0.1);
    /// early_stopping_patience without select selects the best epoch.
    let private settings (r: Reader) path (fs: Map<string, YamlNode>) : Setting list list =
        let decayEpochs = opt fs path "decay_epochs" (readInt r)
        let decayRate = opt fs path "decay_rate" (readFloat r)
        let axes =
            [ for key in settingKeys do
                  match Map.tryFind key fs with
                  | Some n when not (isNullNode n) ->
                      let p = path + "." + key
                      let values =
                          match n with
                          | :? YamlSequenceNode as sq ->
                              if sq.Children.Count = 0 then
                                  r.Error(n, p, sprintf "%s: [] is empty: give one value, or several for a grid axis" key)
                              [ for i, c in Seq.indexed sq.Children do
                                    let pi = sprintf "%s[%d]" p i
                                    r.Mark(pi, c)
                                    yield! settingOf r pi key c |> Option.toList ]
                          | _ -> settingOf r p key n |> Option.toList
                      // a missing decay_epochs is reported below, once
                      let step = Step(defaultArg decayEpochs 1, defaultArg decayRate 0.1)
                      let values = values |> List.map (function Setting.Schedule(Step _) -> Setting.Schedule step | v -> v)
                      if not values.IsEmpty then yield values
                  | _ -> () ]
        let hasStep = axes |> List.concat |> List.exists (function Setting.Schedule(Step _) -> true | _ -> false)
        if hasStep && decayEpochs.IsNone then
            r.Error(fs.["sched"], path + ".sched", "sched: step needs decay_epochs (epochs between decays; decay_rate is 0.1 unless given)")
        for key in [ "decay_epochs"; "decay_rate" ] do
            match Map.tryFind key fs with
            | Some n when not hasStep -> r.Error(n, path + "." + key, sprintf "%s applies to sched: step only" key)
            | _ -> ()
        if fs.ContainsKey "early_stopping_patience" && not (fs.ContainsKey "select") then axes @ [ [ Setting.Select BestEpoch ] ] else axes

    /// The settings given as one value, applied to the defaults; the lists returned apart (grid axes).
    let private trainingAndSweeps (r: Reader) path (fs: Map<string, YamlNode>) =
        let axes = settings r path fs
        let singles, lists = axes |> List.partition (fun a -> a.Length = 1)
        List.fold Settings.apply Training.Defaults (List.concat singles), lists

    /// A pretrain step's training: one value per key.
    let private training (r: Reader) path (fs: Map<string, YamlNode>) =
        let t, lists = trainingAndSweeps r path fs
        for axis in lists do
            let key = Settings.key axis.Head
            r.Error(fs.[key], path + "." + key, sprintf "a pretrain step takes one value of %s (lists are grid axes of experiments)" key)
        t

    let private optionValue (r: Reader) path (n: YamlNode) =
        match n with
        | :? YamlScalarNode as s when s.Style = ScalarStyle.Plain ->
            match parseInt s.Value, parseFloat s.Value, parseBool s.Value with
            | Some i, _, _ -> Some(Int i)
            | None, Some f, _ -> Some(Float f)
            | None, None, Some b -> Some(Flag b)
            | _ -> Some(Text s.Value)
        | :? YamlScalarNode as s -> Some(Text s.Value)
        | _ -> r.Error(n, path, sprintf "a model option must be a number, true/false or a string, got %s" (kindOf n)); None

    let private zooModel (r: Reader) path (fs: Map<string, YamlNode>) (zooNode: YamlNode) =
        let name = readStr r (path + ".zoo") zooNode |> Option.defaultValue ""
        let options =
            match Map.tryFind "options" fs with
            | Some n when not (isNullNode n) ->
                match n with
                | :? YamlMappingNode as m ->
                    [ for KeyValue(k, v) in m.Children do
                          match k with
                          | :? YamlScalarNode as ks ->
                              let p = path + ".options." + ks.Value
                              r.Mark(p, v)
                              match optionValue r p v with
                              | Some x -> yield ks.Value, x
                              | None -> ()
                          | _ -> r.Error(k, path + ".options", "an option name must be a plain word") ]
                    |> Map.ofList
                | _ -> r.Error(n, path + ".options", sprintf "expected a mapping of model options, got %s" (kindOf n)); Map.empty
            | _ -> Map.empty
        { Name = name; Options = options }

    let private sources =
        [ "fashion_mnist"; "cifar"; "image_folder"; "segmentation_pairs"; "composed_segmentation" ]

    let private dataset (r: Reader) path (n: YamlNode) =
        let viewKeys = [ "classes"; "shots"; "limit_train"; "limit_val"; "val_fraction"; "seed" ]
        let fs = fields r path n ([ "source"; "path"; "canvas"; "objects" ] @ viewKeys) (fun _ -> None)
        let source = opt fs path "source" (fun p n -> choice r p n (sources |> List.map (fun s -> s, s)))
        let pathValue = opt fs path "path" (readStr r)
        let notFor (key: string) (src: string) =
            match Map.tryFind key fs with
            | Some kn -> r.Error(kn, path + "." + key, sprintf "'%s' does not apply to %s (only to composed_segmentation)" key src)
            | None -> ()
        let needPath src =
            match pathValue with
            | Some p -> p
            | None ->
                if not (fs.ContainsKey "path") then r.Error(n, path + ".path", sprintf "%s needs a path" src)
                ""
        let src =
            match source with
            | None ->
                if not (fs.ContainsKey "source") then
                    r.Error(n, path + ".source", sprintf "a dataset needs a source: one of %s" (String.concat ", " sources))
                FashionMnist None
            | Some "composed_segmentation" ->
                let req key =
                    match opt fs path key (readInt r) with
                    | Some v -> v
                    | None -> (if not (fs.ContainsKey key) then r.Error(n, path + "." + key, sprintf "composed_segmentation needs %s" key)); 0
                Composed { Canvas = req "canvas"; Objects = req "objects"; Path = pathValue }
            | Some s ->
                notFor "canvas" s
                notFor "objects" s
                match s with
                | "fashion_mnist" -> FashionMnist pathValue
                | "cifar" -> Cifar(needPath s)
                | "image_folder" -> ImageFolder(needPath s)
                | _ -> SegmentationPairs(needPath s)
        let d = DatasetView.Of src
        { d with
            Classes = opt fs path "classes" (fun p n -> list r p n (readInt r))
            ShotsPerClass = opt fs path "shots" (readInt r)
            LimitTrain = opt fs path "limit_train" (readInt r)
            LimitVal = opt fs path "limit_val" (readInt r)
            ValFraction = opt fs path "val_fraction" (readFloat r) |> Option.defaultValue d.ValFraction
            Seed = opt fs path "seed" (readInt r) |> Option.defaultValue d.Seed }

    let private pretrainKeys = [ "name"; "model"; "dataset"; "task"; "seed" ] @ trainingKeys

    let private pretrainStep (r: Reader) path (n: YamlNode) =
        let fs = fields r path n pretrainKeys (fun _ -> None)
        let model =
            match Map.tryFind "model" fs with
            | Some mn ->
                let mp = path + ".model"
                match mn with
                | :? YamlScalarNode -> { Name = readStr r (mp + ".zoo") mn |> Option.defaultValue ""; Options = Map.empty }
                | _ ->
                    let mfs = fields r mp mn [ "zoo"; "options" ] (fun k -> if k = "weights" || k = "pretrain" then Some(sprintf "a pretrain step trains a zoo model from scratch: '%s' does not apply" k) else None)
                    match Map.tryFind "zoo" mfs with
                    | Some z -> zooModel r mp mfs z
                    | None -> r.Error(mn, mp + ".zoo", "the model needs zoo: NAME"); { Name = ""; Options = Map.empty }
            | None -> r.Error(n, path + ".model", "a pretrain step needs a model"); { Name = ""; Options = Map.empty }
        let data =
            match Map.tryFind "dataset" fs with
            | Some dn -> dataset r (path + ".dataset") dn
            | None -> r.Error(n, path + ".dataset", "a pretrain step needs a dataset"); DatasetView.Of(FashionMnist None)
        { Name = opt fs path "name" (readStr r) |> Option.defaultValue ""
          Model = model
          Dataset = data
          Task = opt fs path "task" (fun p n -> choice r p n tasks) |> Option.defaultValue Classification
          Seed = opt fs path "seed" (readInt r) |> Option.defaultValue 0
          Training = training r path fs }

    let private loraKeys = [ "alpha"; "dropout"; "targets"; "rslora"; "bias"; "modules_to_save" ]
    /// lora and dora only (AdaLoRA's own init and optimiser schedule differ)
    let private loraOnlyKeys = [ "init"; "loraplus_lr_ratio"; "fused_qkv" ]
    let private adaloraKeys = [ "init_rank"; "tinit"; "tfinal"; "delta_t"; "beta1"; "beta2"; "orth_reg" ]
    let private adapterKeys = [ "ratio"; "scale"; "modules_to_save" ]
    let private layerKeys = [ "targets"; "modules_to_save" ]
    let private ia3Keys = [ "targets"; "feedforward"; "modules_to_save" ]
    let private lohaKeys = [ "alpha"; "targets"; "modules_to_save"; "effective_conv2d" ]
    let private lokrKeys = lohaKeys @ [ "decompose_both"; "decompose_factor" ]
    let private vptKeys = [ "deep"; "modules_to_save" ]
    let private adaptformerKeys = [ "scale"; "modules_to_save" ]
    let private convpassKeys = [ "scale"; "modules_to_save" ]
    let private factKeys = [ "variant"; "scale"; "targets"; "modules_to_save" ]
    let private veraKeys = [ "targets"; "modules_to_save"; "d_initial"; "projection_prng_key" ]
    let private boftKeys = [ "targets"; "modules_to_save"; "blocks"; "butterfly"; "dropout" ]
    let private hraKeys = [ "targets"; "modules_to_save"; "apply_gs" ]
    let private oftKeys = [ "targets"; "modules_to_save"; "blocks"; "coft"; "eps"; "block_share"; "module_dropout"; "cayley_neumann" ]
    let private methodNames = [ "full"; "head"; "lora"; "dora"; "adalora"; "adapter"; "bitfit"; "ln_tuning"; "ia3"; "ssf"; "loha"; "lokr"; "vera"; "adaptformer"; "vpt"; "convpass"; "fact"; "oft"; "boft"; "hra" ]

    let private keysOf name =
        match name with
        | "lora" | "dora" -> loraKeys @ loraOnlyKeys
        | "adalora" -> loraKeys @ adaloraKeys
        | "adapter" -> adapterKeys
        | "bitfit" | "ln_tuning" | "ssf" -> layerKeys
        | "ia3" -> ia3Keys
        | "loha" -> lohaKeys
        | "lokr" -> lokrKeys
        | "vera" -> veraKeys
        | "adaptformer" -> adaptformerKeys
        | "vpt" -> vptKeys
        | "convpass" -> convpassKeys
        | "fact" -> factKeys
        | "oft" -> oftKeys
        | "boft" -> boftKeys
        | "hra" -> hraKeys
        | _ -> []

    let private strList (r: Reader) fs path key = opt fs path key (fun p n -> list r p n (readStr r))

    /// bitfit, ln_tuning, ssf: { targets, modules_to_save } (no targets: every layer the method fits).
    let private layerOptions (r: Reader) path (fs: Map<string, YamlNode>) : LayerOptions =
        let d = LayerOptions.Defaults
        { LayerTargets = strList r fs path "targets" |> Option.defaultValue d.LayerTargets
          LayerModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.LayerModulesToSave }

    /// ia3: { targets, feedforward, modules_to_save }.
    let private ia3Options (r: Reader) path (fs: Map<string, YamlNode>) : Ia3Options =
        let d = Ia3Options.Defaults
        let targets = strList r fs path "targets"
        { Ia3Targets = targets |> Option.defaultValue d.Ia3Targets
          // PEFT's ViT feed-forward default applies with its default targets only
          Feedforward = strList r fs path "feedforward" |> Option.defaultValue (if targets.IsNone then d.Feedforward else [])
          Ia3ModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.Ia3ModulesToSave }

    /// vera: { targets, modules_to_save, d_initial, projection_prng_key }.
    let private veraOptions (r: Reader) path (fs: Map<string, YamlNode>) : VeraOptions =
        let d = VeraOptions.Defaults
        { VeraTargets = strList r fs path "targets" |> Option.defaultValue d.VeraTargets
          VeraModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.VeraModulesToSave
          DInitial = opt fs path "d_initial" (readFloat r) |> Option.defaultValue d.DInitial
          ProjectionPrngKey = opt fs path "projection_prng_key" (readInt r) |> Option.defaultValue d.ProjectionPrngKey }

    /// adaptformer: { scale, modules_to_save } (the grid's rank is the bottleneck width).
    let private adaptformerOptions (r: Reader) path (fs: Map<string, YamlNode>) : AdaptFormerOptions =
        let d = AdaptFormerOptions.Defaults
        { AdaptFormerScale = opt fs path "scale" (readFloat r) |> Option.defaultValue d.AdaptFormerScale
          AdaptFormerModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.AdaptFormerModulesToSave }

    /// vpt: { deep, modules_to_save } (the grid's rank is the number of prompt tokens).
    let private vptOptions (r: Reader) path (fs: Map<string, YamlNode>) : VptOptions =
        let d = VptOptions.Defaults
        { VptDeep = opt fs path "deep" (readBool r) |> Option.defaultValue d.VptDeep
          VptModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.VptModulesToSave }

    /// convpass: { scale, modules_to_save } (the grid's rank is the bottleneck width).
    let private convpassOptions (r: Reader) path (fs: Map<string, YamlNode>) : ConvpassOptions =
        let d = ConvpassOptions.Defaults
        { ConvpassScale = opt fs path "scale" (readFloat r) |> Option.defaultValue d.ConvpassScale
          ConvpassModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.ConvpassModulesToSave }

    /// fact: { variant: tt|tk, scale, targets, modules_to_save } (the grid's rank is the factors' rank).
    let private factOptions (r: Reader) path (fs: Map<string, YamlNode>) : FactOptions =
        let d = FactOptions.Defaults
        { FactVariant = opt fs path "variant" (fun p n -> choice r p n [ "tt", FactTT; "tk", FactTK ]) |> Option.defaultValue d.FactVariant
          FactScale = opt fs path "scale" (readFloat r) |> Option.defaultValue d.FactScale
          FactTargets = strList r fs path "targets" |> Option.defaultValue d.FactTargets
          FactModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.FactModulesToSave }
    /// oft: { targets, modules_to_save, blocks, coft, eps, block_share, module_dropout, cayley_neumann }.
    let private oftOptions (r: Reader) path (fs: Map<string, YamlNode>) : OftOptions =
        let d = OftOptions.Defaults
        { OftTargets = strList r fs path "targets" |> Option.defaultValue d.OftTargets
          OftModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.OftModulesToSave
          Blocks = opt fs path "blocks" (readInt r)
          Coft = opt fs path "coft" (readBool r) |> Option.defaultValue d.Coft
          Eps = opt fs path "eps" (readFloat r) |> Option.defaultValue d.Eps
          BlockShare = opt fs path "block_share" (readBool r) |> Option.defaultValue d.BlockShare
          OftModuleDropout = opt fs path "module_dropout" (readFloat r) |> Option.defaultValue d.OftModuleDropout
          CayleyNeumann = opt fs path "cayley_neumann" (readBool r) |> Option.defaultValue d.CayleyNeumann }

    /// boft: { targets, modules_to_save, blocks, butterfly, dropout }.
    let private boftOptions (r: Reader) path (fs: Map<string, YamlNode>) : BoftOptions =
        let d = BoftOptions.Defaults
        { BoftTargets = strList r fs path "targets" |> Option.defaultValue d.BoftTargets
          BoftModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.BoftModulesToSave
          BoftBlocks = opt fs path "blocks" (readInt r)
          Butterfly = opt fs path "butterfly" (readInt r) |> Option.defaultValue d.Butterfly
          BoftDropout = opt fs path "dropout" (readFloat r) |> Option.defaultValue d.BoftDropout }

    /// hra: { targets, modules_to_save, apply_gs }.
    let private hraOptions (r: Reader) path (fs: Map<string, YamlNode>) : HraOptions =
        let d = HraOptions.Defaults
        { HraTargets = strList r fs path "targets" |> Option.defaultValue d.HraTargets
          HraModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.HraModulesToSave
          ApplyGs = opt fs path "apply_gs" (readBool r) |> Option.defaultValue d.ApplyGs }

    /// loha, lokr: { alpha, targets, modules_to_save, effective_conv2d[, decompose_both, decompose_factor] }.
    let private lycorisOptions (r: Reader) path (fs: Map<string, YamlNode>) : LycorisOptions =
        let d = LycorisOptions.Defaults
        { LycorisAlpha = opt fs path "alpha" (readFloat r)
          LycorisTargets = strList r fs path "targets" |> Option.defaultValue d.LycorisTargets
          LycorisModulesToSave = strList r fs path "modules_to_save" |> Option.defaultValue d.LycorisModulesToSave
          EffectiveConv2d = opt fs path "effective_conv2d" (readBool r) |> Option.defaultValue d.EffectiveConv2d
          DecomposeBoth = opt fs path "decompose_both" (readBool r) |> Option.defaultValue d.DecomposeBoth
          DecomposeFactor = opt fs path "decompose_factor" (readInt r) |> Option.defaultValue d.DecomposeFactor }

    /// Method options whose value is itself a list: a list of lists makes them a grid axis.
    let private listKeys = set [ "targets"; "modules_to_save"; "feedforward"; "fused_qkv" ]

    /// How an option value shows in a run name: alpha16, bias-all, targets-qkv+proj (or targets2
    /// where the names hold characters a run name cannot).
    let private tagOf (key: string) (index: int) (n: YamlNode) =
        let plain (v: string) = v <> "" && v |> Seq.forall (fun c -> Char.IsLetterOrDigit c || c = '_' || c = '.' || c = '-')
        match n with
        | :? YamlScalarNode as s when plain s.Value ->
            if Char.IsDigit s.Value.[0] || s.Value.[0] = '.' || s.Value.[0] = '-' then key + s.Value else key + "-" + s.Value
        | :? YamlSequenceNode as q ->
            let items = q.Children |> Seq.map (function :? YamlScalarNode as s -> s.Value | _ -> "") |> List.ofSeq
            if not items.IsEmpty && List.forall plain items then key + "-" + String.concat "+" items else sprintf "%s%d" key (index + 1)
        | _ -> sprintf "%s%d" key (index + 1)

    /// One entry of `methods:`: a plain method (Choice1Of2), or a variant (Choice2Of2) when it has a
    /// name, an option given as a list (each value a choice, named by its tag) or training settings.
    let private methodDecl (r: Reader) path (n: YamlNode) : Choice<Method, Variant> option =
        let build name (fs: Map<string, YamlNode>) =
            let loraOpts () =
                let d = LoraOptions.Defaults
                { Alpha = opt fs path "alpha" (readFloat r)
                  Dropout = opt fs path "dropout" (readFloat r) |> Option.defaultValue d.Dropout
                  Targets = opt fs path "targets" (fun p n -> list r p n (readStr r)) |> Option.defaultValue d.Targets
                  RsLora = opt fs path "rslora" (readBool r) |> Option.defaultValue d.RsLora
                  Bias = opt fs path "bias" (fun p n -> choice r p n biases) |> Option.defaultValue d.Bias
                  ModulesToSave = opt fs path "modules_to_save" (fun p n -> list r p n (readStr r)) |> Option.defaultValue d.ModulesToSave
                  Init = opt fs path "init" (loraInit r) |> Option.defaultValue d.Init
                  LoraPlusRatio = opt fs path "loraplus_lr_ratio" (readFloat r)
                  FusedQkv =
                      opt fs path "fused_qkv" (fun p n ->
                          match list r p n (readStr r) with
                          | Some [] -> r.Error(n, p, "fused_qkv: [] names no part: give the parts to adapt (e.g. [q, v]), or leave it out for plain LoRA"); None
                          | parts -> parts)
                      |> Option.defaultValue d.FusedQkv }
            match name with
            | "full" -> Some Full
            | "head" -> Some Head
            | "lora" -> Some(Lora(loraOpts ()))
            | "dora" -> Some(Dora(loraOpts ()))
            | "adalora" ->
                let d = AdaLoraOptions.Defaults
                Some(
                    AdaLora(
                        loraOpts (),
                        { InitRank = opt fs path "init_rank" (readInt r)
                          TInit = opt fs path "tinit" (readInt r) |> Option.defaultValue d.TInit
                          TFinal = opt fs path "tfinal" (readInt r) |> Option.defaultValue d.TFinal
                          DeltaT = opt fs path "delta_t" (readInt r) |> Option.defaultValue d.DeltaT
                          Beta1 = opt fs path "beta1" (readFloat r) |> Option.defaultValue d.Beta1
                          Beta2 = opt fs path "beta2" (readFloat r) |> Option.defaultValue d.Beta2
                          OrthReg = opt fs path "orth_reg" (readFloat r) |> Option.defaultValue d.OrthReg }
                    )
                )
            | "bitfit" -> Some(BitFit(layerOptions r path fs))
            | "ln_tuning" -> Some(LnTuning(layerOptions r path fs))
            | "ssf" -> Some(Ssf(layerOptions r path fs))
            | "ia3" -> Some(Ia3(ia3Options r path fs))
            | "loha" -> Some(LoHa(lycorisOptions r path fs))
            | "lokr" -> Some(LoKr(lycorisOptions r path fs))
            | "vera" -> Some(Vera(veraOptions r path fs))
            | "adaptformer" -> Some(AdaptFormer(adaptformerOptions r path fs))
            | "vpt" -> Some(Vpt(vptOptions r path fs))
            | "convpass" -> Some(Convpass(convpassOptions r path fs))
            | "fact" -> Some(Fact(factOptions r path fs))
            | "oft" -> Some(Oft(oftOptions r path fs))
            | "boft" -> Some(Boft(boftOptions r path fs))
            | "hra" -> Some(Hra(hraOptions r path fs))
            | _ ->
                let d = AdapterOptions.Defaults
                Some(
                    Adapter
                        { Ratio = opt fs path "ratio" (readFloat r)
                          Scale = opt fs path "scale" (readFloat r) |> Option.defaultValue d.Scale
                          ModulesToSave = opt fs path "modules_to_save" (fun p n -> list r p n (readStr r)) |> Option.defaultValue d.ModulesToSave }
                )
        let declare name (opts: YamlNode option) =
            let allowed = keysOf name
            let fs =
                match opts with
                | Some o when not (isNullNode o) ->
                    fields r path o (allowed @ [ "name" ] @ trainingKeys) (fun k ->
                        let owners = methodNames |> List.filter (fun m -> List.contains k (keysOf m))
                        if List.isEmpty owners then None
                        elif List.isEmpty allowed then Some(sprintf "%s takes no options ('%s' is an option of %s)" name k (String.concat ", " owners))
                        else Some(sprintf "'%s' does not apply to %s (it is an option of %s)" k name (String.concat ", " owners)))
                | _ -> Map.empty
            let options = fs |> Map.filter (fun k _ -> List.contains k allowed)
            // an option given as a list of values (a list of lists for an option that is a list)
            let axes =
                [ for KeyValue(k, v) in options do
                      match v with
                      | :? YamlSequenceNode as q when not (listKeys.Contains k) || (q.Children.Count > 0 && q.Children |> Seq.forall (fun c -> c :? YamlSequenceNode)) ->
                          if q.Children.Count = 0 then r.Error(v, path + "." + k, sprintf "%s: [] is empty: give one value, or several for a grid axis" k)
                          else
                              let items = List.ofSeq q.Children
                              for i, c in List.indexed items do r.Mark(sprintf "%s.%s[%d]" path k i, c)
                              yield k, items |> List.mapi (fun i c -> tagOf k i c, c)
                      | _ -> () ]
            // an empty list is reported above: read as if absent
            let options =
                options |> Map.filter (fun k v -> match v with :? YamlSequenceNode as q when not (listKeys.Contains k) -> q.Children.Count > 0 | _ -> true)
            let rec combos axes =
                match axes with
                | [] -> [ [], options ]
                | (k, values) :: rest -> [ for tag, node in values do for tags, o in combos rest -> tag :: tags, Map.add k node o ]
            // one value is not an axis: it names no run
            let many = axes |> List.filter (fun (_, vs) -> vs.Length > 1) |> List.map fst |> set
            let choices =
                combos axes
                |> List.choose (fun (tags, o) ->
                    let shown = List.zip (List.map fst axes) tags |> List.filter (fun (k, _) -> many.Contains k) |> List.map snd
                    build name o |> Option.map (fun m -> shown, m))
            let variantName = opt fs path "name" (readStr r)
            let training = settings r path fs
            match choices with
            | [] -> None
            | [ [], m ] when variantName.IsNone && training.IsEmpty -> Some(Choice1Of2 m)
            | cs -> Some(Choice2Of2 { Name = variantName; Choices = cs; Training = training })
        let known (node: YamlNode) name =
            if List.contains name methodNames then true
            else
                r.Error(node, path, sprintf "unknown method '%s'%s; expected one of %s" name (ZooNames.didYouMean methodNames name) (String.concat ", " methodNames))
                false
        match n with
        | :? YamlScalarNode as s -> if known n s.Value then declare s.Value None else None
        | :? YamlMappingNode as m when m.Children.Count = 1 ->
            let kv = Seq.head m.Children
            match kv.Key with
            | :? YamlScalarNode as k -> if known kv.Key k.Value then declare k.Value (Some kv.Value) else None
            | _ -> r.Error(n, path, "a method is a name (lora) or a name with options (lora: { alpha: 16 })"); None
        | _ -> r.Error(n, path, sprintf "a method is a name (lora) or a name with options (lora: { alpha: 16 }), got %s" (kindOf n)); None

    /// Copies the marks of a named pretrain step under the path of a model that refers to it.
    let private aliasMarks (r: Reader) (from: string) (into: string) =
        for KeyValue(k, v) in List.ofSeq r.Marks do
            if k = from || k.StartsWith(from + ".") then r.Marks.[into + k.Substring from.Length] <- v

    let private baseModel (r: Reader) (named: Map<string, Pretrain * string>) path (n: YamlNode) =
        match n with
        | :? YamlScalarNode when not (isNullNode n) ->
            r.Mark(path + ".zoo", n)
            readStr r (path + ".zoo") n |> Option.map (fun z -> Zoo { Name = z; Options = Map.empty })
        | _ ->
            let fs =
                fields r path n [ "zoo"; "options"; "weights"; "pretrain"; "onnx" ] (fun _ -> None)
            match Map.tryFind "onnx" fs with
            | Some on ->
                if fs.ContainsKey "zoo" || fs.ContainsKey "weights" || fs.ContainsKey "pretrain" then
                    r.Error(n, path, "a model is one of zoo: NAME, pretrain: STEP or onnx: FILE, not several")
                r.Mark(path + ".onnx", on)
                let z = zooModel r path fs on
                Some(Onnx z)
            | None ->
            match Map.tryFind "pretrain" fs, Map.tryFind "zoo" fs with
            | Some pn, zooNode ->
                if zooNode.IsSome || fs.ContainsKey "weights" || fs.ContainsKey "options" then
                    r.Error(n, path, "a model is either zoo: NAME (with options, weights) or pretrain: STEP, not both")
                match pn with
                | :? YamlScalarNode as s when s.Style = ScalarStyle.Plain ->
                    match Map.tryFind s.Value named with
                    | Some(p, at) ->
                        r.Referenced.Add s.Value |> ignore
                        aliasMarks r at (path + ".pretrain")
                        Some(FromPretrain p)
                    | None ->
                        let names = named |> Map.toList |> List.map fst
                        r.Error(pn, path + ".pretrain",
                                sprintf "no pretrain step named '%s'%s; define it under pretrain: at the top of the file, or inline" s.Value
                                    (ZooNames.didYouMean names s.Value))
                        None
                | _ -> Some(FromPretrain(pretrainStep r (path + ".pretrain") pn))
            | None, Some zn ->
                let z = zooModel r path fs zn
                match opt fs path "weights" (readStr r) with
                | Some w -> Some(Weights(z, w))
                | None -> Some(Zoo z)
            | None, None ->
                r.Error(n, path, "a model needs zoo: NAME (optionally with options and weights), pretrain: STEP or onnx: FILE")
                None

    /// A table axis: `method`, or `{ model: Baseline }` (the axis with its header).
    let private tableAxis (r: Reader) path (n: YamlNode) =
        match n with
        | :? YamlScalarNode -> readStr r path n |> Option.map TableAxis.Of
        | :? YamlMappingNode as m when m.Children.Count = 1 ->
            let kv = Seq.head m.Children
            match kv.Key with
            | :? YamlScalarNode as k -> Some { Axis = k.Value; Header = readStr r path kv.Value }
            | _ -> r.Error(n, path, "an axis is a name (method) or a name with its header ({ model: Baseline })"); None
        | _ -> r.Error(n, path, sprintf "an axis is a name (method) or a name with its header ({ model: Baseline }), got %s" (kindOf n)); None

    /// A table cell: `accuracy`, or `{ metric: dice, aggregate: mean, format: F3, header: DICE }`.
    let private tableCell (r: Reader) path (n: YamlNode) =
        match n with
        | :? YamlScalarNode -> readStr r (path + ".metric") n |> Option.map TableCell.Of
        | _ ->
            let fs = fields r path n [ "metric"; "aggregate"; "format"; "header" ] (fun _ -> None)
            match opt fs path "metric" (readStr r) with
            | Some m ->
                Some
                    { Metric = m
                      Aggregate = opt fs path "aggregate" (fun p n -> choice r p n TableVocabulary.aggregates) |> Option.defaultValue MeanStd
                      Format = opt fs path "format" (readStr r)
                      Header = opt fs path "header" (readStr r) }
            | None -> (if not (fs.ContainsKey "metric") then r.Error(n, path + ".metric", "a cell needs a metric")); None

    let private tableDecl (r: Reader) path (n: YamlNode) =
        let fs = fields r path n [ "name"; "caption"; "rows"; "columns"; "cells"; "filters"; "order"; "baseline" ] (fun _ -> None)
        let filters =
            match Map.tryFind "filters" fs with
            | Some (:? YamlMappingNode as m) ->
                [ for KeyValue(k, v) in m.Children do
                      match k with
                      | :? YamlScalarNode as ks ->
                          let p = path + ".filters." + ks.Value
                          r.Mark(p, k)
                          let values =
                              match v with
                              | :? YamlSequenceNode -> list r p v (readStr r) |> Option.defaultValue []
                              | _ -> readStr r p v |> Option.toList
                          yield ks.Value, values
                      | _ -> r.Error(k, path + ".filters", "a filter is axis: [values]") ]
            | Some fn when not (isNullNode fn) -> r.Error(fn, path + ".filters", sprintf "expected a mapping axis: [values], got %s" (kindOf fn)); []
            | _ -> []
        { Name = opt fs path "name" (readStr r) |> Option.defaultValue ""
          Caption = opt fs path "caption" (readStr r)
          Rows = opt fs path "rows" (fun p n -> list r p n (tableAxis r)) |> Option.defaultValue []
          Columns = opt fs path "columns" (fun p n -> list r p n (tableAxis r)) |> Option.defaultValue []
          Cells = opt fs path "cells" (fun p n -> list r p n (tableCell r)) |> Option.defaultValue []
          Filters = filters
          Order = opt fs path "order" (fun p n -> list r p n (readStr r)) |> Option.defaultValue []
          Baseline = opt fs path "baseline" (readStr r) }

    let private experimentKeys =
        [ "name"; "model"; "models"; "dataset"; "datasets"; "task"; "methods"; "ranks"; "seed"; "seeds"; "tables"; "combine" ] @ trainingKeys

    /// `{ name: mix, adapters: [{ run: lora-r4, weight: 0.5 }, ...], combination: cat|linear|svd, svd_rank: 4 }`.
    let private combinationOf (r: Reader) path (n: YamlNode) =
        let fs = fields r path n [ "name"; "adapters"; "combination"; "svd_rank" ] (fun _ -> None)
        let adapter p (a: YamlNode) =
            let afs = fields r p a [ "run"; "weight" ] (fun _ -> None)
            match opt afs p "run" (readStr r) with
            | Some run -> Some(run, opt afs p "weight" (readFloat r) |> Option.defaultValue 1.0)
            | None -> (if not (afs.ContainsKey "run") then r.Error(a, p + ".run", "an adapter names a run: { run: lora-r4, weight: 0.5 }")); None
        { Name = opt fs path "name" (readStr r) |> Option.defaultValue ""
          Adapters = opt fs path "adapters" (fun p n -> list r p n adapter) |> Option.defaultValue []
          Type =
            opt fs path "combination" (fun p n -> choice r p n [ "cat", CombinationType.Cat; "linear", CombinationType.Linear; "svd", CombinationType.Svd ])
            |> Option.defaultValue CombinationType.Cat
          SvdRank = opt fs path "svd_rank" (readInt r) }

    let private experimentOf (r: Reader) named path (n: YamlNode) =
        let fs = fields r path n experimentKeys (fun _ -> None)
        let oneOrMany single many (item: string -> YamlNode -> 'a option) what =
            match Map.tryFind single fs, Map.tryFind many fs with
            | Some _, Some mn -> r.Error(mn, path + "." + many, sprintf "give either %s or %s, not both" single many); []
            | Some sn, None ->
                let p = sprintf "%s.%s[0]" path many
                r.Mark(p, sn)
                r.Mark(path + "." + many, sn)
                item p sn |> Option.toList
            | None, Some mn -> r.Mark(path + "." + many, mn); list r (path + "." + many) mn item |> Option.defaultValue []
            | None, None -> r.Error(n, path + "." + many, sprintf "an experiment needs %s (or %s: a list)" single many); []
        let task = opt fs path "task" (fun p n -> choice r p n tasks) |> Option.defaultValue Classification
        let training, sweeps = trainingAndSweeps r path fs
        // the declarations with their index in the YAML; validation numbers them plain methods first,
        // then the variants, so the marks of each move to that number
        let declared =
            match Map.tryFind "methods" fs with
            | Some mn when not (isNullNode mn) ->
                match mn with
                | :? YamlSequenceNode as q ->
                    [ for i, c in Seq.indexed q.Children do
                          let p = sprintf "%s.methods[%d]" path i
                          r.Mark(p, c)
                          match methodDecl r p c with Some d -> yield i, d | None -> () ]
                | _ -> r.Error(mn, path + ".methods", sprintf "expected a list, got %s" (kindOf mn)); []
            | _ -> []
        let order = (declared |> List.filter (fun (_, d) -> d.IsChoice1Of2)) @ (declared |> List.filter (fun (_, d) -> d.IsChoice2Of2))
        let prefix i = sprintf "%s.methods[%d]" path i
        let marked = r.Marks |> Seq.filter (fun kv -> kv.Key.StartsWith(path + ".methods[")) |> List.ofSeq
        for kv in marked do r.Marks.Remove kv.Key |> ignore
        for j, (i, _) in List.indexed order do
            for KeyValue(k, v) in marked do
                if k = prefix i || k.StartsWith(prefix i + ".") || k.StartsWith(prefix i + "[") then r.Marks.[prefix j + k.Substring((prefix i).Length)] <- v
        { Name = opt fs path "name" (readStr r) |> Option.defaultValue ""
          Models = oneOrMany "model" "models" (baseModel r named) "model"
          Datasets = oneOrMany "dataset" "datasets" (fun p n -> Some(dataset r p n)) "dataset"
          Task = task
          Methods = [ for d in declared do match d with _, Choice1Of2 m -> yield m | _ -> () ]
          Variants = [ for d in declared do match d with _, Choice2Of2 v -> yield v | _ -> () ]
          Ranks = opt fs path "ranks" (fun p n -> list r p n (readInt r)) |> Option.defaultValue []
          Seeds =
            match opt fs path "seed" (readInt r), opt fs path "seeds" (fun p n -> list r p n (readInt r)) with
            | Some s, None -> [ s ]
            | None, Some ss -> ss
            | Some s, Some _ -> r.Error(fs.["seeds"], path + ".seeds", "give either seed or seeds, not both"); [ s ]
            | None, None -> [ 0 ]
          Training = training
          Sweeps = sweeps
          Tables = opt fs path "tables" (fun p n -> list r p n (fun p n -> Some(tableDecl r p n))) |> Option.defaultValue []
          Combinations = opt fs path "combine" (fun p n -> list r p n (fun p n -> Some(combinationOf r p n))) |> Option.defaultValue [] }

    /// Nesting deeper than this is refused before building the node tree: YamlDotNet builds it
    /// recursively, and a file of 50,000 '[' would overflow the stack (an uncatchable crash).
    let maxDepth = 64

    /// The position where nesting first exceeds maxDepth, read from the (non-recursive) event stream.
    let private tooDeep (parser: Parser) =
        let mutable depth = 0
        let mutable found = None
        while found.IsNone && parser.MoveNext() do
            match parser.Current with
            | :? Events.MappingStart | :? Events.SequenceStart ->
                depth <- depth + 1
                if depth > maxDepth then found <- Some parser.Current.Start
            | :? Events.MappingEnd | :? Events.SequenceEnd -> depth <- depth - 1
            | _ -> ()
        found

    /// Read YAML text into experiments, the declared pretrain steps, structural errors (with line and
    /// column) and the marks of every value read. `file` only labels errors.
    let read (file: string) (text: string) : Read =
        let r = Reader(file)
        let declared = ResizeArray<string * Pretrain>()
        let stream = YamlStream()
        // our own parsers, so that an exception without a position can still say where parsing stopped
        let depthParser = Parser(new StringReader(text))
        let parser = Parser(new StringReader(text))
        let experiments =
            try
                match tooDeep depthParser with
                | Some mark ->
                    r.Errors.Add
                        { File = file; Line = int mark.Line; Column = int mark.Column; Field = "yaml"
                          Message = sprintf "nested more than %d levels deep: a spec never needs that" maxDepth }
                    []
                | None ->
                stream.Load(parser)
                if stream.Documents.Count = 0 then
                    r.Errors.Add { File = file; Line = 1; Column = 1; Field = "experiments"; Message = "the spec is empty: it needs experiments: [...]" }
                    []
                else
                    let root = stream.Documents.[0].RootNode
                    let fs = fields r "" root [ "pretrain"; "experiments" ] (fun _ -> None)
                    let named =
                        match Map.tryFind "pretrain" fs with
                        | Some pn when not (isNullNode pn) ->
                            match pn with
                            | :? YamlSequenceNode as s ->
                                let steps =
                                    [ for i, c in Seq.indexed s.Children do
                                          let at = sprintf "pretrain[%d]" i
                                          let p = pretrainStep r at c
                                          declared.Add((at, p))
                                          yield p.Name, (p, at), c ]
                                // Map.ofList would keep the last of two steps with one name, silently
                                for i, (name, _, c) in List.indexed steps do
                                    if steps |> List.take i |> List.exists (fun (n, _, _) -> n = name) then
                                        r.Error(c, sprintf "pretrain[%d].name" i, sprintf "two pretrain steps are named '%s': names must be unique" name)
                                steps |> List.map (fun (n, p, _) -> n, p) |> Map.ofList
                            | _ -> r.Error(pn, "pretrain", sprintf "expected a list of pretrain steps, got %s" (kindOf pn)); Map.empty
                        | _ -> Map.empty
                    match Map.tryFind "experiments" fs with
                    | Some en ->
                        r.Mark("experiments", en)
                        match en with
                        | :? YamlSequenceNode as s ->
                            [ for i, c in Seq.indexed s.Children do
                                  let at = sprintf "experiments[%d]" i
                                  r.Mark(at, c)
                                  yield experimentOf r named at c ]
                        | _ -> r.Error(en, "experiments", sprintf "expected a list of experiments, got %s" (kindOf en)); []
                    | None -> r.Error(root, "experiments", "the spec needs experiments: [...]"); []
            with
            | :? YamlException as e ->
                r.Errors.Add
                    { File = file; Line = int e.Start.Line; Column = int e.Start.Column; Field = "yaml"
                      Message = sprintf "not valid YAML: %s" (if isNull e.InnerException then e.Message else e.InnerException.Message) }
                []
            // YamlDotNet's scanner throws InvalidOperationException on some malformed input ("- {" + text)
            | e when not (e :? OutOfMemoryException) ->
                let line, column =
                    match parser.Current, depthParser.Current with
                    | null, null -> 0, 0
                    | null, ev
                    | ev, _ -> int ev.End.Line, int ev.End.Column
                r.Errors.Add
                    { File = file; Line = line; Column = column; Field = "yaml"
                      Message = "not valid YAML: the parser stopped here (an unclosed bracket or brace, or a value where a key belongs?)" }
                []
        { Experiments = experiments
          Pretrains = [ for at, p in declared -> { Path = at; Step = p; Used = r.Referenced.Contains p.Name } ]
          Errors = List.ofSeq r.Errors
          Marks = r.Marks :> Marks }

    /// One method declaration as YAML text ("lora", "adalora: { tinit: 10 }"), read with the vocabulary
    /// of a spec's `methods:` list (what `lora summary` and `lora bench` take); errors as "field: message".
    let method (text: string) : Result<Method, string list> =
        let r = Reader("method")
        let m =
            try
                let stream = YamlStream()
                stream.Load(new StringReader(text))
                if stream.Documents.Count = 0 then None
                else
                    match methodDecl r "method" stream.Documents.[0].RootNode with
                    | Some(Choice1Of2 m) -> Some m
                    | Some(Choice2Of2 _) ->
                        r.Errors.Add { File = "method"; Line = 1; Column = 1; Field = "method"; Message = "a name, option lists or training settings do not apply here: give one method" }
                        None
                    | None -> None
            with :? YamlException as e ->
                r.Errors.Add { File = "method"; Line = 1; Column = 1; Field = "method"; Message = sprintf "not valid YAML: %s" e.Message }
                None
        match m, List.ofSeq r.Errors with
        | Some m, [] -> Ok m
        | None, [] -> Error [ "method: the method is empty" ]
        | _, errors -> Error [ for e in errors -> sprintf "%s: %s" e.Field e.Message ]

    /// A data set in a spec's vocabulary (`source: fashion_mnist`, `classes: [5, 6]`, ...), as a
    /// `dataset:` entry reads it: for `lora eval --dataset`. Errors are `file:line:col: field: message`.
    let datasetView (file: string) (text: string) : Result<DatasetView, string list> =
        let r = Reader(file)
        let d =
            try
                let stream = YamlStream()
                stream.Load(new StringReader(text))
                if stream.Documents.Count = 0 then None else Some(dataset r "dataset" stream.Documents.[0].RootNode)
            with :? YamlException as e ->
                r.Errors.Add { File = file; Line = 1; Column = 1; Field = "dataset"; Message = sprintf "not valid YAML: %s" e.Message }
                None
        match d, List.ofSeq r.Errors with
        | Some d, [] -> Ok d
        | None, [] -> Error [ sprintf "%s: the data set is empty" file ]
        | _, errors -> Error [ for e in errors -> e.ToString() ]

    /// An experiment's declared tables as `lora run` keeps them beside its results (`tables: [...]`,
    /// the spec's table vocabulary), so that `lora tables` without the spec lays them out as declared.
    /// Errors are `file:line:col: field: message`.
    let tables (file: string) (text: string) : Result<TableDecl list, string list> =
        let r = Reader(file)
        let ts =
            try
                let stream = YamlStream()
                stream.Load(new StringReader(text))
                if stream.Documents.Count = 0 then []
                else
                    let fs = fields r "" stream.Documents.[0].RootNode [ "tables" ] (fun _ -> None)
                    match Map.tryFind "tables" fs with
                    | Some n when not (isNullNode n) -> list r "tables" n (fun p n -> Some(tableDecl r p n)) |> Option.defaultValue []
                    | _ -> []
            with :? YamlException as e ->
                r.Errors.Add { File = file; Line = int e.Start.Line; Column = int e.Start.Column; Field = "tables"; Message = sprintf "not valid YAML: %s" e.Message }
                []
        match List.ofSeq r.Errors with
        | [] -> Ok ts
        | errors -> Error [ for e in errors -> e.ToString() ]

    /// Parse YAML text into experiments, structural errors (with line and column) and the marks of
    /// every value read. `file` only labels errors.
    let parse (file: string) (text: string) : Experiment list * SpecError list * Marks =
        let spec = read file text
        spec.Experiments, spec.Errors, spec.Marks

    /// Attach YAML locations to errors found on records (nearest enclosing path that has a mark).
    let locate (file: string) (marks: Marks) (e: SpecError) =
        let rec find (p: string) =
            match marks.TryGetValue p with
            | true, m -> Some m
            | _ ->
                let cut = max (p.LastIndexOf '.') (p.LastIndexOf '[')
                if cut > 0 then find (p.Substring(0, cut)) else None
        match find e.Field with
        | Some(l, c) -> { e with File = file; Line = l; Column = c }
        | None -> { e with File = file }

    // ---------------------------------------------------------------- writer

    let private q (s: string) = Json.write (JString s)
    let private f (x: float) = Json.formatFloat x
    let private flowInts (xs: int list) = "[" + (xs |> List.map string |> String.concat ", ") + "]"
    let private flowStrs (xs: string list) = "[" + (xs |> List.map q |> String.concat ", ") + "]"

    let private writeOption v =
        match v with
        | Int i -> string i
        | Float x -> f x
        | Text s -> q s
        | Flag b -> if b then "true" else "false"

    let private writeZoo (sb: StringBuilder) (ind: string) (z: ZooModel) =
        sb.AppendLine(ind + "zoo: " + q z.Name) |> ignore
        if not z.Options.IsEmpty then
            sb.AppendLine(ind + "options:") |> ignore
            for KeyValue(k, v) in z.Options do
                sb.AppendLine(sprintf "%s  %s: %s" ind (q k) (writeOption v)) |> ignore

    let private writeDataset (sb: StringBuilder) (ind: string) (d: DatasetView) =
        let line (s: string) = sb.AppendLine(ind + s) |> ignore
        match d.Source with
        | FashionMnist p -> line "source: fashion_mnist"; p |> Option.iter (fun p -> line ("path: " + q p))
        | Cifar p -> line "source: cifar"; line ("path: " + q p)
        | ImageFolder p -> line "source: image_folder"; line ("path: " + q p)
        | SegmentationPairs p -> line "source: segmentation_pairs"; line ("path: " + q p)
        | Composed c ->
            line "source: composed_segmentation"
            line (sprintf "canvas: %d" c.Canvas)
            line (sprintf "objects: %d" c.Objects)
            c.Path |> Option.iter (fun p -> line ("path: " + q p))
        d.Classes |> Option.iter (fun cs -> line ("classes: " + flowInts cs))
        d.ShotsPerClass |> Option.iter (fun s -> line (sprintf "shots: %d" s))
        d.LimitTrain |> Option.iter (fun s -> line (sprintf "limit_train: %d" s))
        d.LimitVal |> Option.iter (fun s -> line (sprintf "limit_val: %d" s))
        line ("val_fraction: " + f d.ValFraction)
        line (sprintf "seed: %d" d.Seed)

    /// A setting's value as YAML text.
    let private settingText (s: Setting) =
        let orNone g = function Some v -> g v | None -> "none"
        match s with
        | Setting.Epochs v | Setting.Batch v | Setting.Warmup v | Setting.ImageSize v | Setting.GradAccum v | Setting.CropPadding v -> string v
        | Setting.Lr v | Setting.WeightDecay v | Setting.MinLr v | Setting.LabelSmoothing v -> f v
        | Setting.Device d -> Canonical.deviceName d
        | Setting.Precision p -> Canonical.precisionName p
        | Setting.Schedule sc -> Settings.scheduleName sc
        | Setting.ClipGrad c -> orNone f c
        | Setting.HFlip b -> if b then "true" else "false"
        | Setting.RandomResizedCrop c -> orNone f c
        | Setting.Patience p -> orNone string p
        | Setting.Select x -> Settings.selectionName x
        | Setting.Head h -> Settings.headName h

    /// Settings as YAML lines (an axis as a flow list), with decay_epochs and decay_rate for sched: step.
    let private writeSettings (sb: StringBuilder) (ind: string) (axes: Setting list list) =
        for axis in axes do
            let values = axis |> List.map settingText
            sb.AppendLine(sprintf "%s%s: %s" ind (Settings.key axis.Head) (if values.Length = 1 then values.Head else "[" + String.concat ", " values + "]")) |> ignore
        match axes |> List.concat |> List.tryPick (function Setting.Schedule(Step(e, r)) -> Some(e, r) | _ -> None) with
        | Some(e, r) -> sb.AppendLine(sprintf "%sdecay_epochs: %d" ind e).AppendLine(sprintf "%sdecay_rate: %s" ind (f r)) |> ignore
        | None -> ()

    /// The settings of a training that differ from the defaults (the first eight always), except the
    /// keys written elsewhere (an experiment's axes).
    let private trainingSettings (except: Set<string>) (t: Training) =
        let d = Training.Defaults
        [ Setting.Epochs t.Epochs; Setting.Batch t.Batch; Setting.Lr t.Lr; Setting.Warmup t.Warmup; Setting.WeightDecay t.WeightDecay
          Setting.Device t.Device; Setting.Precision t.Precision ]
        @ (t.ImageSize |> Option.map Setting.ImageSize |> Option.toList)
        @ [ if t.Schedule <> d.Schedule then Setting.Schedule t.Schedule
            if t.MinLr <> d.MinLr then Setting.MinLr t.MinLr
            if t.ClipGrad <> d.ClipGrad then Setting.ClipGrad t.ClipGrad
            if t.GradAccum <> d.GradAccum then Setting.GradAccum t.GradAccum
            if t.LabelSmoothing <> d.LabelSmoothing then Setting.LabelSmoothing t.LabelSmoothing
            if t.HFlip <> d.HFlip then Setting.HFlip t.HFlip
            if t.CropPadding <> d.CropPadding then Setting.CropPadding t.CropPadding
            if t.RandomResizedCrop <> d.RandomResizedCrop then Setting.RandomResizedCrop t.RandomResizedCrop
            if t.Patience <> d.Patience then Setting.Patience t.Patience
            // written always with a patience: without select, a patience selects the best epoch
            if t.Select <> d.Select || t.Patience.IsSome then Setting.Select t.Select
            if t.Head <> d.Head then Setting.Head t.Head ]
        |> List.filter (fun s -> not (except.Contains(Settings.key s)))

    let private writeTrainingExcept (sb: StringBuilder) (ind: string) (except: Set<string>) (t: Training) =
        writeSettings sb ind [ for s in trainingSettings except t -> [ s ] ]

    let private writeTraining (sb: StringBuilder) (ind: string) (t: Training) = writeTrainingExcept sb ind Set.empty t

    let private writePretrain (sb: StringBuilder) (ind: string) (p: Pretrain) =
        let line (s: string) = sb.AppendLine(ind + s) |> ignore
        line ("name: " + q p.Name)
        line "model:"
        writeZoo sb (ind + "  ") p.Model
        line "dataset:"
        writeDataset sb (ind + "  ") p.Dataset
        line ("task: " + Canonical.taskName p.Task)
        line (sprintf "seed: %d" p.Seed)
        writeTraining sb ind p.Training

    let private writeMethod (sb: StringBuilder) (ind: string) (m: Method) =
        let line (s: string) = sb.AppendLine(ind + s) |> ignore
        let lora (o: LoraOptions) =
            o.Alpha |> Option.iter (fun a -> line ("    alpha: " + f a))
            line ("    dropout: " + f o.Dropout)
            line ("    targets: " + flowStrs o.Targets)
            line ("    rslora: " + (if o.RsLora then "true" else "false"))
            line ("    bias: " + Canonical.biasName o.Bias)
            line ("    modules_to_save: " + flowStrs o.ModulesToSave)
            if o.Init <> DefaultInit then line ("    init: " + o.Init.Name)
            o.LoraPlusRatio |> Option.iter (fun q -> line ("    loraplus_lr_ratio: " + f q))
            if not o.FusedQkv.IsEmpty then line ("    fused_qkv: " + flowStrs o.FusedQkv)
        match m with
        | Full -> line "- full"
        | Head -> line "- head"
        | Lora o -> line "- lora:"; lora o
        | Dora o -> line "- dora:"; lora o
        | AdaLora(o, a) ->
            line "- adalora:"
            lora o
            a.InitRank |> Option.iter (fun i -> line (sprintf "    init_rank: %d" i))
            line (sprintf "    tinit: %d" a.TInit)
            line (sprintf "    tfinal: %d" a.TFinal)
            line (sprintf "    delta_t: %d" a.DeltaT)
            line ("    beta1: " + f a.Beta1)
            line ("    beta2: " + f a.Beta2)
            line ("    orth_reg: " + f a.OrthReg)
        | Adapter a ->
            line "- adapter:"
            a.Ratio |> Option.iter (fun x -> line ("    ratio: " + f x))
            line ("    scale: " + f a.Scale)
            line ("    modules_to_save: " + flowStrs a.ModulesToSave)
        | BitFit o | LnTuning o | Ssf o ->
            line ("- " + m.Name + ":")
            line ("    targets: " + flowStrs o.LayerTargets)
            line ("    modules_to_save: " + flowStrs o.LayerModulesToSave)
        | Ia3 o ->
            line "- ia3:"
            line ("    targets: " + flowStrs o.Ia3Targets)
            line ("    feedforward: " + flowStrs o.Feedforward)
            line ("    modules_to_save: " + flowStrs o.Ia3ModulesToSave)
        | LoHa o | LoKr o ->
            line ("- " + m.Name + ":")
            o.LycorisAlpha |> Option.iter (fun a -> line ("    alpha: " + f a))
            line ("    targets: " + flowStrs o.LycorisTargets)
            line ("    modules_to_save: " + flowStrs o.LycorisModulesToSave)
            line ("    effective_conv2d: " + (if o.EffectiveConv2d then "true" else "false"))
            if m.IsLoKr then
                line ("    decompose_both: " + (if o.DecomposeBoth then "true" else "false"))
                line (sprintf "    decompose_factor: %d" o.DecomposeFactor)
        | Vera o ->
            line "- vera:"
            line ("    targets: " + flowStrs o.VeraTargets)
            line ("    modules_to_save: " + flowStrs o.VeraModulesToSave)
            line ("    d_initial: " + f o.DInitial)
            line (sprintf "    projection_prng_key: %d" o.ProjectionPrngKey)
        | AdaptFormer o ->
            line "- adaptformer:"
            line ("    scale: " + f o.AdaptFormerScale)
            line ("    modules_to_save: " + flowStrs o.AdaptFormerModulesToSave)
        | Vpt o ->
            line "- vpt:"
            line ("    deep: " + (if o.VptDeep then "true" else "false"))
            line ("    modules_to_save: " + flowStrs o.VptModulesToSave)
        | Convpass o ->
            line "- convpass:"
            line ("    scale: " + f o.ConvpassScale)
            line ("    modules_to_save: " + flowStrs o.ConvpassModulesToSave)
        | Fact o ->
            line "- fact:"
            line ("    variant: " + (if o.FactVariant = FactTK then "tk" else "tt"))
            line ("    scale: " + f o.FactScale)
            line ("    targets: " + flowStrs o.FactTargets)
            line ("    modules_to_save: " + flowStrs o.FactModulesToSave)
        | Oft o ->
            let b x = if x then "true" else "false"
            line "- oft:"
            line ("    targets: " + flowStrs o.OftTargets)
            line ("    modules_to_save: " + flowStrs o.OftModulesToSave)
            o.Blocks |> Option.iter (fun n -> line (sprintf "    blocks: %d" n))
            line ("    coft: " + b o.Coft)
            line ("    eps: " + f o.Eps)
            line ("    block_share: " + b o.BlockShare)
            line ("    module_dropout: " + f o.OftModuleDropout)
            line ("    cayley_neumann: " + b o.CayleyNeumann)
        | Boft o ->
            line "- boft:"
            line ("    targets: " + flowStrs o.BoftTargets)
            line ("    modules_to_save: " + flowStrs o.BoftModulesToSave)
            o.BoftBlocks |> Option.iter (fun n -> line (sprintf "    blocks: %d" n))
            line (sprintf "    butterfly: %d" o.Butterfly)
            line ("    dropout: " + f o.BoftDropout)
        | Hra o ->
            line "- hra:"
            line ("    targets: " + flowStrs o.HraTargets)
            line ("    modules_to_save: " + flowStrs o.HraModulesToSave)
            line ("    apply_gs: " + (if o.ApplyGs then "true" else "false"))

    let private writeTables (sb: StringBuilder) (ts: TableDecl list) =
        let axis (a: TableAxis) = match a.Header with Some h -> sprintf "{ %s: %s }" (q a.Axis) (q h) | None -> q a.Axis
        let axes (xs: TableAxis list) = "[" + String.concat ", " (List.map axis xs) + "]"
        let aggregate a = TableVocabulary.aggregates |> List.find (fun (_, x) -> x = a) |> fst
        let cell (c: TableCell) =
            [ yield "metric: " + q c.Metric
              yield "aggregate: " + aggregate c.Aggregate
              match c.Format with Some x -> yield "format: " + q x | None -> ()
              match c.Header with Some x -> yield "header: " + q x | None -> () ]
            |> String.concat ", " |> sprintf "{ %s }"
        if not ts.IsEmpty then
            sb.AppendLine "    tables:" |> ignore
            for t in ts do
                sb.AppendLine("      - name: " + q t.Name) |> ignore
                let line (s: string) = sb.AppendLine("        " + s) |> ignore
                t.Caption |> Option.iter (fun c -> line ("caption: " + q c))
                line ("rows: " + axes t.Rows)
                line ("columns: " + axes t.Columns)
                line ("cells: [" + String.concat ", " (List.map cell t.Cells) + "]")
                if not t.Filters.IsEmpty then
                    line ("filters: { " + String.concat ", " [ for k, vs in t.Filters -> q k + ": " + flowStrs vs ] + " }")
                line ("order: " + flowStrs t.Order)
                t.Baseline |> Option.iter (fun b -> line ("baseline: " + q b))

    /// A variant: its method's options (of its one choice: option lists are not written back), its
    /// name and its settings.
    let private writeVariant (sb: StringBuilder) (ind: string) (v: Variant) =
        match v.Choices with
        | [ [], m ] ->
            let head = StringBuilder()
            writeMethod head ind m
            let lines = head.ToString().TrimEnd().Split('\n') |> Array.map (fun l -> l.TrimEnd '\r')
            // "- full" becomes "- full:" with the variant's fields under it
            sb.AppendLine(if lines.[0].EndsWith ":" then lines.[0] else lines.[0] + ":") |> ignore
            for l in lines.[1..] do sb.AppendLine l |> ignore
            v.Name |> Option.iter (fun n -> sb.AppendLine(ind + "    name: " + q n) |> ignore)
            writeSettings sb (ind + "    ") v.Training
        | _ -> invalidArg "v" "YamlSpec.write writes variants of one choice (option lists are not written back)"

    /// YAML text of declared tables (`tables: [...]`), as `tables` reads it back into equal records.
    let writeTableDecls (ts: TableDecl list) =
        let sb = StringBuilder()
        writeTables sb ts
        // written as an experiment's field; a file of its own starts at the margin
        sb.ToString().Split('\n') |> Array.map (fun l -> if l.StartsWith "    " then l.Substring 4 else l) |> String.concat "\n"

    /// YAML text for experiments, every field explicit (pretrain steps inline); `parse` reads it back
    /// into equal records.
    let write (experiments: Experiment list) =
        let sb = StringBuilder()
        sb.AppendLine "experiments:" |> ignore
        for e in experiments do
            let line (s: string) = sb.AppendLine("    " + s) |> ignore
            sb.AppendLine("  - name: " + q e.Name) |> ignore
            line ("task: " + Canonical.taskName e.Task)
            line "models:"
            for m in e.Models do
                match m with
                | Zoo z ->
                    sb.AppendLine("      - zoo: " + q z.Name) |> ignore
                    if not z.Options.IsEmpty then
                        sb.AppendLine "        options:" |> ignore
                        for KeyValue(k, v) in z.Options do
                            sb.AppendLine(sprintf "          %s: %s" (q k) (writeOption v)) |> ignore
                | Weights(z, p) ->
                    sb.AppendLine("      - weights: " + q p) |> ignore
                    writeZoo sb "        " z
                | Onnx z ->
                    sb.AppendLine("      - onnx: " + q z.Name) |> ignore
                    if not z.Options.IsEmpty then
                        sb.AppendLine "        options:" |> ignore
                        for KeyValue(k, v) in z.Options do
                            sb.AppendLine(sprintf "          %s: %s" (q k) (writeOption v)) |> ignore
                | FromPretrain p ->
                    sb.AppendLine "      - pretrain:" |> ignore
                    writePretrain sb "          " p
            line "datasets:"
            for d in e.Datasets do
                sb.AppendLine "      -" |> ignore
                writeDataset sb "        " d
            line "methods:"
            for m in e.Methods do writeMethod sb "      " m
            for v in e.Variants do writeVariant sb "      " v
            line ("ranks: " + flowInts e.Ranks)
            line ("seeds: " + flowInts e.Seeds)
            writeTrainingExcept sb "    " (e.Sweeps |> List.choose List.tryHead |> List.map Settings.key |> set) e.Training
            writeSettings sb "    " e.Sweeps
            writeTables sb e.Tables
            if not e.Combinations.IsEmpty then
                line "combine:"
                for c in e.Combinations do
                    let kind = match c.Type with CombinationType.Cat -> "cat" | CombinationType.Linear -> "linear" | CombinationType.Svd -> "svd"
                    let adapters = [ for n, w in c.Adapters -> sprintf "{ run: %s, weight: %s }" (q n) (f w) ] |> String.concat ", "
                    line (sprintf "  - { name: %s, adapters: [%s], combination: %s%s }" (q c.Name) adapters kind
                              (match c.SvdRank with Some k -> sprintf ", svd_rank: %d" k | None -> ""))
        sb.ToString()
