/// Generators of experiment records (valid by construction, apart from paths, which validation
/// checks against the disk and the tests do not).
module Lora.Tests.DslGenerators

open FsCheck
open FsCheck.FSharp
open Lora.Dsl

let private ident = Gen.elements [ "alpha"; "b2"; "fmnist"; "quick_start"; "grid-1"; "x" ]
let private nice = Gen.choose (1, 5000) |> Gen.map (fun i -> float i / 997.0)
let private fraction = Gen.choose (0, 99) |> Gen.map (fun i -> float i / 100.0)
let private pathGen = Gen.elements [ "data/cifar"; "some dir/with space"; "ünï/cödé"; "a\"quote"; "back\\slash" ]
let private textGen = Gen.elements [ "avg"; "token"; "a: b"; "#hash"; "quote\"d"; "tab\tline\nx"; "123"; "true"; ""; "é" ]

let optionValue =
    Gen.oneof [ Gen.choose (-3, 300) |> Gen.map Int; nice |> Gen.map Float; textGen |> Gen.map Text; Gen.elements [ true; false ] |> Gen.map Flag ]

let zooModel =
    gen {
        let! name = Gen.elements ZooNames.all
        let! keys = Gen.subListOf [ "img_size"; "drop_rate"; "global_pool"; "qkv_bias"; "weird key" ]
        let! values = Gen.listOfLength keys.Length optionValue
        // positive where validation requires it
        let values = List.map2 (fun k v -> match k, v with "img_size", Int i -> Int(abs i + 1) | _, v -> v) keys values
        return { Name = name; Options = Map.ofList (List.zip keys values) }
    }

let dataset (task: Task) =
    gen {
        let! source =
            match task with
            | Classification ->
                Gen.oneof [ Gen.optionOf pathGen |> Gen.map FashionMnist; pathGen |> Gen.map Cifar; pathGen |> Gen.map ImageFolder ]
            | Segmentation ->
                Gen.oneof
                    [ pathGen |> Gen.map SegmentationPairs
                      gen {
                          let! c = Gen.choose (28, 128)
                          let! o = Gen.choose (1, 4)
                          let! p = Gen.optionOf pathGen
                          return Composed { Canvas = c; Objects = o; Path = p }
                      } ]
        let! classes = Gen.optionOf (Gen.subListOf [ 0 .. 9 ] |> Gen.filter (List.isEmpty >> not))
        let! shots = Gen.optionOf (Gen.choose (1, 50))
        let! lt = Gen.optionOf (Gen.choose (1, 5000))
        let! lv = Gen.optionOf (Gen.choose (1, 500))
        // never 0: a source split by val_fraction needs validation images (Validation refuses 0)
        let! vf = fraction |> Gen.map (fun f -> if f = 0.0 then 0.1 else f)
        let! seed = Gen.choose (0, 9)
        // segmentation pairs have no class labels to select or count shots of
        let classes, shots = match source with SegmentationPairs _ -> None, None | _ -> classes, shots
        return { Source = source; Classes = classes; ShotsPerClass = shots; LimitTrain = lt; LimitVal = lv; ValFraction = vf; Seed = seed }
    }

/// Some of the recipe's settings, each valid (min_lr stays 0: it is bounded by each run's lr).
let recipeSettings =
    let one =
        Gen.oneof
            [ Gen.elements [ Linear; Constant; Step(2, 0.5) ] |> Gen.map Setting.Schedule
              Gen.elements [ None; Some 0.5; Some 5.0 ] |> Gen.map Setting.ClipGrad
              Gen.choose (2, 4) |> Gen.map Setting.GradAccum
              fraction |> Gen.map Setting.LabelSmoothing
              Gen.constant (Setting.HFlip true)
              Gen.choose (1, 4) |> Gen.map Setting.CropPadding
              Gen.elements [ 0.08; 0.5 ] |> Gen.map (Some >> Setting.RandomResizedCrop)
              Gen.choose (1, 3) |> Gen.map (Some >> Setting.Patience)
              Gen.constant (Setting.Select BestEpoch)
              Gen.constant (Setting.Head ReuseHead) ]
    Gen.listOf one |> Gen.map (List.truncate 4)

let training =
    gen {
        let! e = Gen.choose (1, 5)
        let! b = Gen.choose (1, 128)
        let! lr = nice
        let! w = Gen.choose (0, 10)
        let! wd = fraction
        let! d = Gen.elements [ Cpu; Cuda ]
        let! p = Gen.elements [ Fp32; Bf16 ] // fp16 is refused by validation
        let! s = Gen.choose (8, 64)
        let! recipe = recipeSettings
        return List.fold Settings.apply { Training.Defaults with Epochs = e; Batch = b; Lr = lr; Warmup = w; WeightDecay = wd; Device = d; Precision = p; ImageSize = Some s } recipe
    }

let pretrainStep (name: string) =
    gen {
        let! m = zooModel
        let! task = Gen.elements [ Classification; Segmentation ]
        let! d = dataset task
        let! s = Gen.choose (0, 5)
        let! t = training
        return { Name = name; Model = m; Dataset = d; Task = task; Seed = s; Training = t }
    }

let loraOptions =
    gen {
        let! alpha = Gen.optionOf nice
        let! dropout = fraction
        let! targets = Gen.elements [ [ "qkv" ]; [ "qkv"; "proj" ]; [ "blocks\\.\\d+\\.mlp\\.fc1" ] ]
        let! rs = Gen.elements [ true; false ]
        let! bias = Gen.elements [ NoBias; LoraOnly; AllBias ]
        let! save = Gen.elements [ [ "head" ]; []; [ "head"; "norm" ] ]
        return { Alpha = alpha; Dropout = dropout; Targets = targets; RsLora = rs; Bias = bias; ModulesToSave = save
                 Init = DefaultInit; LoraPlusRatio = None; FusedQkv = [] }
    }

/// lora's and dora's options: the shared ones and their own (init, LoRA+); fused_qkv has its own tests.
let loraOwnOptions =
    gen {
        let! o = loraOptions
        let! init = Gen.elements [ DefaultInit; DefaultInit; GaussianInit; PissaInit None; PissaInit(Some 2); OloraInit ]
        let! plus = Gen.optionOf (Gen.elements [ 2.0; 16.0 ])
        return { o with Init = init; LoraPlusRatio = plus }
    }

let methodOf (maxRank: int) (kind: string) =
    match kind with
    | "full" -> Gen.constant Full
    | "head" -> Gen.constant Head
    | "lora" -> loraOwnOptions |> Gen.map Lora
    | "dora" -> loraOwnOptions |> Gen.map Dora
    | "adalora" ->
        gen {
            let! o = loraOptions
            let! init = Gen.optionOf (Gen.choose (maxRank, maxRank + 8))
            let! ti = Gen.choose (0, 20)
            let! tf = Gen.choose (0, 20)
            let! dt = Gen.choose (1, 5)
            let! b1 = fraction
            let! b2 = fraction
            let! orth = nice
            return AdaLora(o, { InitRank = init; TInit = ti; TFinal = tf; DeltaT = dt; Beta1 = b1; Beta2 = b2; OrthReg = orth })
        }
    | "bitfit" | "ln_tuning" | "ssf" ->
        gen {
            let! targets = Gen.elements [ []; [ "qkv" ]; [ "norm1"; "norm2" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            let o: LayerOptions = { LayerTargets = targets; LayerModulesToSave = save }
            return (match kind with "bitfit" -> BitFit o | "ln_tuning" -> LnTuning o | _ -> Ssf o)
        }
    | "ia3" ->
        gen {
            let! targets, ff = Gen.elements [ [ "qkv"; "fc2" ], [ "fc2" ]; [ "qkv" ], []; [ "fc1"; "fc2" ], [ "fc1"; "fc2" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            return Ia3 { Ia3Targets = targets; Feedforward = ff; Ia3ModulesToSave = save }
        }
    | "loha" | "lokr" ->
        gen {
            let! alpha = Gen.optionOf nice
            let! targets = Gen.elements [ [ "qkv" ]; [ "qkv"; "proj" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            let! eff = Gen.elements [ true; false ]
            let! both = Gen.elements [ true; false ]
            let! factor = Gen.elements [ -1; 2; 4 ]
            let o: LycorisOptions =
                { LycorisAlpha = alpha; LycorisTargets = targets; LycorisModulesToSave = save; EffectiveConv2d = eff
                  DecomposeBoth = (kind = "lokr" && both); DecomposeFactor = (if kind = "lokr" then factor else -1) }
            return (if kind = "loha" then LoHa o else LoKr o)
        }
    | "vpt" ->
        gen {
            let! deep = Gen.elements [ true; false ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            return Vpt { VptDeep = deep; VptModulesToSave = save }
        }
    | "adaptformer" ->
        gen {
            let! s = nice
            let! save = Gen.elements [ [ "head" ]; [] ]
            return AdaptFormer { AdaptFormerScale = s; AdaptFormerModulesToSave = save }
        }
    | "convpass" ->
        gen {
            let! s = nice
            let! save = Gen.elements [ [ "head" ]; [] ]
            return Convpass { ConvpassScale = s; ConvpassModulesToSave = save }
        }
    | "fact" ->
        gen {
            let! v = Gen.elements [ FactTT; FactTK ]
            let! s = nice
            let! targets = Gen.elements [ [ "qkv" ]; [ "qkv"; "proj"; "fc1"; "fc2" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            return Fact { FactVariant = v; FactScale = s; FactTargets = targets; FactModulesToSave = save }
        }
    | "vera" ->
        gen {
            let! targets = Gen.elements [ [ "qkv" ]; [ "qkv"; "fc1" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            let! d = nice
            let! key = Gen.choose (0, 1000)
            return Vera { VeraTargets = targets; VeraModulesToSave = save; DInitial = d; ProjectionPrngKey = key }
        }
    | "oft" ->
        gen {
            let! targets = Gen.elements [ [ "qkv" ]; [ "qkv"; "fc1" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            // the grid's ranks may hold 1, which is no block size: blocks (PEFT's r) always given here
            let! blocks = Gen.choose (1, 8)
            let! coft = Gen.elements [ true; false ]
            let! eps = nice
            let! share = Gen.elements [ true; false ]
            let! dropout = Gen.elements [ 0.0; 0.25 ]
            let! neumann = Gen.elements [ true; false ]
            return Oft { OftTargets = targets; OftModulesToSave = save; Blocks = Some blocks; Coft = coft; Eps = eps; BlockShare = share
                         OftModuleDropout = dropout; CayleyNeumann = neumann }
        }
    | "boft" ->
        gen {
            let! targets = Gen.elements [ [ "qkv" ]; [ "qkv"; "fc1" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            let! blocks = Gen.optionOf (Gen.choose (1, 8))
            let! butterfly = Gen.choose (1, 3)
            let! dropout = Gen.elements [ 0.0; 0.25 ]
            return Boft { BoftTargets = targets; BoftModulesToSave = save; BoftBlocks = blocks; Butterfly = butterfly; BoftDropout = dropout }
        }
    | "hra" ->
        gen {
            let! targets = Gen.elements [ [ "qkv" ]; [ "qkv"; "fc1" ] ]
            let! save = Gen.elements [ [ "head" ]; [] ]
            let! gs = Gen.elements [ true; false ]
            return Hra { HraTargets = targets; HraModulesToSave = save; ApplyGs = gs }
        }
    | _ ->
        gen {
            let! ratio = Gen.optionOf (Gen.choose (1, 3988) |> Gen.map (fun i -> float i / 997.0)) // (0, 4]: Limits.maxAdapterRatio
            let! scale = nice
            let! save = Gen.elements [ [ "head" ]; [] ]
            return Adapter { Ratio = ratio; Scale = scale; ModulesToSave = save }
        }

/// A valid experiment: 1-2 models, 1-2 datasets, 1-4 distinct methods, 1-3 ranks, 1-2 seeds.
/// A valid table declaration (words from the vocabulary; headers and captions with hostile text).
let tableDecl (name: string) =
    gen {
        let axis = gen {
            let! a = Gen.elements (TableVocabulary.axes @ [ "config.training.lr" ])
            let! h = Gen.optionOf textGen
            return { Axis = a; Header = h } }
        let! rows = Gen.choose (1, 3) >>= fun n -> Gen.listOfLength n axis
        let! grid = Gen.elements [ true; false ]
        let! columns = if grid then Gen.listOfLength 1 axis else Gen.constant []
        let cell = gen {
            let! m = Gen.elements TableVocabulary.metricNames
            let! a = Gen.elements [ Mean; MeanStd; Max ]
            let! f = Gen.optionOf (Gen.elements (TableVocabulary.formats @ [ "F3" ]))
            let! h = Gen.optionOf textGen
            return { Metric = m; Aggregate = a; Format = f; Header = h } }
        let! cells = if grid then Gen.listOfLength 1 cell else Gen.choose (1, 3) >>= fun n -> Gen.listOfLength n cell
        let! caption = Gen.optionOf textGen
        let! filters = Gen.elements [ []; [ "method", [ "lora"; "full" ] ]; [ "dataset", [ "a: b" ] ] ]
        let! order = Gen.elements [ []; [ "model"; "mode" ] ]
        let! baseline = if grid then Gen.constant None else Gen.optionOf (Gen.elements [ "lora"; "full" ])
        return { Name = name; Caption = caption; Rows = rows; Columns = columns; Cells = cells; Filters = filters; Order = order; Baseline = baseline }
    }

let experiment (name: string) =
    gen {
        let! task = Gen.elements [ Classification; Segmentation ]
        let! ranks = Gen.subListOf [ 1; 2; 4; 8; 16 ] |> Gen.filter (List.isEmpty >> not) |> Gen.bind Gen.shuffle |> Gen.map List.ofArray
        let! kinds = Gen.subListOf [ "full"; "head"; "lora"; "dora"; "adalora"; "adapter"; "bitfit"; "ln_tuning"; "ia3"; "ssf"; "loha"; "lokr"; "vera"; "adaptformer"; "vpt"; "convpass"; "fact"; "oft"; "boft"; "hra" ] |> Gen.filter (List.isEmpty >> not)
        let! methods = kinds |> List.map (methodOf (List.max ranks)) |> Gen.sequenceToList
        let! nModels = Gen.choose (1, 2)
        let! models =
            Gen.listOfLength nModels (Gen.choose (0, 2))
            |> Gen.map (List.mapi (fun i k -> i, k))
            |> Gen.bind (fun picks ->
                picks
                |> List.map (fun (i, k) ->
                    match k with
                    | 0 -> zooModel |> Gen.map Zoo
                    | 1 -> Gen.map2 (fun z p -> Weights(z, p + ".safetensors")) zooModel pathGen
                    | _ -> pretrainStep (sprintf "%s-pre%d" name i) |> Gen.map FromPretrain)
                |> Gen.sequenceToList)
        let! nData = Gen.choose (1, 2)
        let! datasets = Gen.listOfLength nData (dataset task)
        let! seeds = Gen.subListOf [ 0; 1; 7 ] |> Gen.filter (List.isEmpty >> not)
        let! t = training
        let! nTables = Gen.choose (0, 2)
        let! tables = [ for i in 1 .. nTables -> tableDecl (sprintf "t%d" i) ] |> Gen.sequenceToList
        // segmentation masks are not cropped (validation refuses it)
        let t = if task = Segmentation then { t with CropPadding = 0; RandomResizedCrop = None; LabelSmoothing = 0.0 } else t
        // some methods as variants (a name, settings of their own), some training settings as axes
        let! asVariant = Gen.listOfLength methods.Length (Gen.elements [ false; false; true ])
        let! variantLr = Gen.elements [ [ Setting.Lr 0.01 ]; [ Setting.Epochs 2; Setting.Lr 0.003 ]; [] ]
        let plain = List.zip methods asVariant |> List.filter (snd >> not) |> List.map fst
        let variants =
            List.zip methods asVariant
            |> List.filter snd
            |> List.mapi (fun i (m, _) -> { Name = Some(sprintf "%s-v%d" m.Name i); Choices = [ [], m ]; Training = [ for s in variantLr -> [ s ] ] })
        let! sweeps =
            Gen.elements
                [ []
                  [ [ Setting.Lr 0.001; Setting.Lr 0.003 ] ]
                  [ [ Setting.WeightDecay 0.0; Setting.WeightDecay 0.05 ]; [ Setting.LabelSmoothing 0.0; Setting.LabelSmoothing 0.1 ] ] ]
        // a swept key keeps its default in Training (the YAML has one value or a list per key)
        let t = sweeps |> List.fold (fun t axis -> Settings.current Training.Defaults axis.Head |> Option.fold Settings.apply t) t
        let methods, variants = if plain.IsEmpty && variants.IsEmpty then methods, [] else plain, variants
        return { Name = name; Models = models; Datasets = datasets; Task = task; Methods = methods; Ranks = ranks; Seeds = seeds; Training = t
                 Sweeps = sweeps; Variants = variants; Tables = tables; Combinations = [] }
    }
    // two identical models or datasets would give two runs one name: validation rejects that
    |> Gen.filter (fun e -> List.distinct (List.map Grid.modelLabel e.Models) = List.map Grid.modelLabel e.Models
                            && List.distinct (List.map Grid.datasetLabel e.Datasets) = List.map Grid.datasetLabel e.Datasets)

let experimentArb = Arb.fromGen (ident |> Gen.bind experiment)
