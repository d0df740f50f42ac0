namespace Lora.Dsl

open System
open System.Globalization
open System.Text

/// A minimal JSON tree whose text is canonical: object keys sorted (ordinal), no spaces,
/// floats in round-trip form. Equal configurations give equal text, whatever order they were written in.
type Json =
    | JNull
    | JBool of bool
    | JInt of int64
    | JFloat of float
    | JString of string
    | JArray of Json list
    | JObject of (string * Json) list

module Json =
    let private escape (s: string) =
        let sb = StringBuilder("\"")
        for c in s do
            match c with
            | '"' -> sb.Append "\\\"" |> ignore
            | '\\' -> sb.Append "\\\\" |> ignore
            | '\n' -> sb.Append "\\n" |> ignore
            | '\r' -> sb.Append "\\r" |> ignore
            | '\t' -> sb.Append "\\t" |> ignore
            | c when c < ' ' -> sb.AppendFormat("\\u{0:x4}", int c) |> ignore
            | c -> sb.Append c |> ignore
        sb.Append('"').ToString()

    let formatFloat (f: float) =
        if Double.IsNaN f || Double.IsInfinity f then "null"
        else
            let s = f.ToString("R", CultureInfo.InvariantCulture)
            if s.Contains '.' || s.Contains 'E' then s else s + ".0"

    let rec write (j: Json) =
        match j with
        | JNull -> "null"
        | JBool b -> if b then "true" else "false"
        | JInt i -> string i
        | JFloat f -> formatFloat f
        | JString s -> escape s
        | JArray xs -> "[" + (xs |> List.map write |> String.concat ",") + "]"
        | JObject kvs ->
            let sorted = kvs |> List.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b))
            "{" + (sorted |> List.map (fun (k, v) -> escape k + ":" + write v) |> String.concat ",") + "}"

/// The canonical form of a run's fully resolved configuration, and its content hash.
module Canonical =
    let private opt f = function Some x -> f x | None -> JNull
    let private strs xs = JArray(xs |> List.map JString)
    let private ints (xs: int list) = JArray(xs |> List.map (int64 >> JInt))

    let optionValue = function
        | Int i -> JInt(int64 i)
        | Float f -> JFloat f
        | Text s -> JString s
        | Flag b -> JBool b

    let zoo (z: ZooModel) =
        [ "zoo", JString z.Name
          "options", JObject [ for KeyValue(k, v) in z.Options -> k, optionValue v ] ]

    let taskName = function Classification -> "classification" | Segmentation -> "segmentation"
    let deviceName = function Cpu -> "cpu" | Cuda -> "cuda"
    let precisionName = function Fp32 -> "fp32" | Bf16 -> "bf16" | Fp16 -> "fp16"
    let biasName = function NoBias -> "none" | LoraOnly -> "lora_only" | AllBias -> "all"

    let dataset (d: DatasetView) =
        let source =
            match d.Source with
            | FashionMnist p -> [ "source", JString "fashion_mnist"; "path", opt JString p ]
            // a folder's content is part of its identity (the installed Fashion-MNIST's is fixed)
            | Cifar p -> [ "source", JString "cifar"; "path", JString p; "content", JString(DataFingerprint.ofFolder p) ]
            | ImageFolder p -> [ "source", JString "image_folder"; "path", JString p; "content", JString(DataFingerprint.ofFolder p) ]
            | SegmentationPairs p -> [ "source", JString "segmentation_pairs"; "path", JString p; "content", JString(DataFingerprint.ofFolder p) ]
            | Composed c ->
                [ "source", JString "composed_segmentation"; "path", opt JString c.Path
                  "canvas", JInt(int64 c.Canvas); "objects", JInt(int64 c.Objects) ]
        JObject(
            source
            @ [ "classes", opt ints d.Classes
                "shots", opt (int64 >> JInt) d.ShotsPerClass
                "limit_train", opt (int64 >> JInt) d.LimitTrain
                "limit_val", opt (int64 >> JInt) d.LimitVal
                "val_fraction", JFloat d.ValFraction
                "seed", JInt(int64 d.Seed) ]
        )

    /// The recipe's fields that differ from their defaults (so a run that uses none keeps the hash
    /// it had before they existed); the head is the run's business (see runJson).
    let recipe (t: Training) =
        let d = Training.Defaults
        [ if t.Schedule <> d.Schedule then
              yield "sched", JString(Settings.scheduleName t.Schedule)
              match t.Schedule with
              | Step(e, r) -> yield! [ "decay_epochs", JInt(int64 e); "decay_rate", JFloat r ]
              | _ -> ()
          if t.MinLr <> d.MinLr then yield "min_lr", JFloat t.MinLr
          if t.ClipGrad <> d.ClipGrad then yield "clip_grad", opt JFloat t.ClipGrad
          if t.GradAccum <> d.GradAccum then yield "gradient_accumulation_steps", JInt(int64 t.GradAccum)
          if t.LabelSmoothing <> d.LabelSmoothing then yield "label_smoothing", JFloat t.LabelSmoothing
          if t.HFlip <> d.HFlip then yield "hflip", JBool t.HFlip
          if t.CropPadding <> d.CropPadding then yield "crop_padding", JInt(int64 t.CropPadding)
          if t.RandomResizedCrop <> d.RandomResizedCrop then yield "random_resized_crop", opt JFloat t.RandomResizedCrop
          if t.Patience <> d.Patience then yield "early_stopping_patience", opt (int64 >> JInt) t.Patience
          if t.Select <> d.Select then yield "select", JString(Settings.selectionName t.Select) ]

    let training (t: Training) =
        JObject(
            [ "epochs", JInt(int64 t.Epochs)
              "batch", JInt(int64 t.Batch)
              "lr", JFloat t.Lr
              "warmup", JInt(int64 t.Warmup)
              "weight_decay", JFloat t.WeightDecay
              "device", JString(deviceName t.Device)
              "precision", JString(precisionName t.Precision)
              "image_size", opt (int64 >> JInt) t.ImageSize ]
            @ recipe t)

    /// Whether a run's head setting matters: a tune of a base that has a classifier of its own (an
    /// imported ONNX graph always gets a new head).
    let headApplies (r: Run) =
        r.Kind = Tuning && (match r.Model with Weights _ | FromPretrain _ -> true | Zoo _ | Onnx _ -> false)

    let loraOptions (o: LoraOptions) =
        [ "alpha", opt JFloat o.Alpha
          "dropout", JFloat o.Dropout
          "targets", strs o.Targets
          "rslora", JBool o.RsLora
          "bias", JString(biasName o.Bias)
          "modules_to_save", strs o.ModulesToSave ]
        // written only when set: runs without them keep their hashes
        @ [ if o.Init <> DefaultInit then yield "init", JString o.Init.Name
            match o.LoraPlusRatio with Some q -> yield "loraplus_lr_ratio", JFloat q | None -> ()
            if not o.FusedQkv.IsEmpty then yield "fused_qkv", strs o.FusedQkv ]

    let methodJson (m: Method) =
        JObject(
            ("kind", JString m.Name)
            :: (match m with
                | Full | Head -> []
                | Lora o | Dora o -> loraOptions o
                | AdaLora(o, a) ->
                    loraOptions o
                    @ [ "init_rank", opt (int64 >> JInt) a.InitRank
                        "tinit", JInt(int64 a.TInit)
                        "tfinal", JInt(int64 a.TFinal)
                        "delta_t", JInt(int64 a.DeltaT)
                        "beta1", JFloat a.Beta1
                        "beta2", JFloat a.Beta2
                        "orth_reg", JFloat a.OrthReg ]
                | Adapter a -> [ "ratio", opt JFloat a.Ratio; "scale", JFloat a.Scale; "modules_to_save", strs a.ModulesToSave ]
                | BitFit o | LnTuning o | Ssf o -> [ "targets", strs o.LayerTargets; "modules_to_save", strs o.LayerModulesToSave ]
                | Ia3 o -> [ "targets", strs o.Ia3Targets; "feedforward", strs o.Feedforward; "modules_to_save", strs o.Ia3ModulesToSave ]
                | LoHa o | LoKr o ->
                    [ "alpha", opt JFloat o.LycorisAlpha
                      "targets", strs o.LycorisTargets
                      "modules_to_save", strs o.LycorisModulesToSave
                      "effective_conv2d", JBool o.EffectiveConv2d ]
                    @ (match m with
                       | LoKr _ -> [ "decompose_both", JBool o.DecomposeBoth; "decompose_factor", JInt(int64 o.DecomposeFactor) ]
                       | _ -> [])
                | Vera o ->
                    [ "targets", strs o.VeraTargets
                      "modules_to_save", strs o.VeraModulesToSave
                      "d_initial", JFloat o.DInitial
                      "projection_prng_key", JInt(int64 o.ProjectionPrngKey) ]
                | AdaptFormer o -> [ "scale", JFloat o.AdaptFormerScale; "modules_to_save", strs o.AdaptFormerModulesToSave ]
                | Vpt o -> [ "deep", JBool o.VptDeep; "modules_to_save", strs o.VptModulesToSave ]
                | Convpass o -> [ "scale", JFloat o.ConvpassScale; "modules_to_save", strs o.ConvpassModulesToSave ]
                | Fact o ->
                    [ "variant", JString(if o.FactVariant = FactTK then "tk" else "tt")
                      "scale", JFloat o.FactScale
                      "targets", strs o.FactTargets
                      "modules_to_save", strs o.FactModulesToSave ]
                | Oft o ->
                    [ "targets", strs o.OftTargets
                      "modules_to_save", strs o.OftModulesToSave
                      "blocks", opt (int64 >> JInt) o.Blocks
                      "coft", JBool o.Coft
                      "eps", JFloat o.Eps
                      "block_share", JBool o.BlockShare
                      "module_dropout", JFloat o.OftModuleDropout
                      "cayley_neumann", JBool o.CayleyNeumann ]
                | Boft o ->
                    [ "targets", strs o.BoftTargets
                      "modules_to_save", strs o.BoftModulesToSave
                      "blocks", opt (int64 >> JInt) o.BoftBlocks
                      "butterfly", JInt(int64 o.Butterfly)
                      "dropout", JFloat o.BoftDropout ]
                | Hra o -> [ "targets", strs o.HraTargets; "modules_to_save", strs o.HraModulesToSave; "apply_gs", JBool o.ApplyGs ])
        )

    let hashOf (text: string) =
        let bytes = Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes text)
        Convert.ToHexString(bytes).ToLowerInvariant().Substring(0, 12)

    /// The run's configuration as a JSON tree (a pretrain base appears as its run's hash).
    let rec runJson (r: Run) =
        match r.Kind with
        | Combining c -> combinedJson c r
        | Pretraining | Tuning -> trainedJson r

    /// A combination: the runs it combines by hash (their changes change it), weights, type, and
    /// the data it is evaluated on.
    and private combinedJson (c: CombinedAdapters) (r: Run) =
        let kind =
            match c.Combination.Type with
            | CombinationType.Cat -> "cat"
            | CombinationType.Linear -> "linear"
            | CombinationType.Svd -> "svd"
        JObject
            [ "kind", JString "combining"
              "experiment", JString r.Experiment
              "name", JString r.Name
              "combination",
              JObject
                  [ "type", JString kind
                    "svd_rank", opt (fun (k: int) -> JInt(int64 k)) c.Combination.SvdRank
                    "adapters", JArray [ for (_, w), s in List.zip c.Combination.Adapters c.Sources -> JObject [ "run", JString(hash s); "weight", JFloat w ] ] ]
              "dataset", dataset r.Dataset
              "task", JString(taskName r.Task) ]

    and private trainedJson (r: Run) =
        let model =
            match r.Model with
            | Zoo z -> JObject(("kind", JString "zoo") :: zoo z)
            | Weights(z, p) -> JObject(("kind", JString "weights") :: ("weights", JString p) :: zoo z)
            // hashed by content: the same graph anywhere is the same model
            | Onnx z -> JObject [ "kind", JString "onnx"; "sha256", JString(FileFingerprint.sha256 z.Name); "options", JObject [ for KeyValue(k, v) in z.Options -> k, optionValue v ] ]
            | FromPretrain p -> JObject [ "kind", JString "pretrain"; "name", JString p.Name; "run", JString(hash (Grid.pretrainRun p)) ]
        JObject
            [ "kind", JString(match r.Kind with Pretraining -> "pretraining" | Tuning -> "tuning" | Combining _ -> "combining")
              "experiment", JString r.Experiment
              "name", JString r.Name
              "model", model
              "dataset", dataset r.Dataset
              "task", JString(taskName r.Task)
              "method", methodJson r.Method
              "rank", opt (fun (k: Rank) -> JInt(int64 k.Value)) r.Rank
              "seed", JInt(int64 r.Seed)
              "training",
              (match training r.Training with
               // always written where it applies: the default changed (a fresh head), so these runs' hashes did too
               | JObject fields when headApplies r -> JObject(fields @ [ "head", JString(Settings.headName r.Training.Head) ])
               | j -> j) ]

    /// Canonical JSON text of the run's configuration.
    and json (r: Run) = Json.write (runJson r)

    /// 12 hex digits of the SHA-256 of the canonical JSON.
    and hash (r: Run) = hashOf (json r)

    /// The hash of the run this run depends on (the pretrain step of its base model), or null.
    let rec dependsOn (r: Run) : string =
        match r.Kind, r.Model with
        // a combination loads the adapters into its sources' base
        | Combining c, _ -> dependsOn c.Sources.Head
        | _, FromPretrain p -> hash (Grid.pretrainRun p)
        | _ -> null

    /// The hashes of the runs whose adapters a combination combines (none for other runs).
    let sources (r: Run) : string list =
        match r.Kind with
        | Combining c -> c.Sources |> List.map hash
        | _ -> []

