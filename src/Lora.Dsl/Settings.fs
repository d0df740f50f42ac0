namespace Lora.Dsl

open System.Globalization

/// Training settings as values: their YAML keys, how one is set on a Training, and the short label
/// that names a run where a grid axis varies it ("lr0.003").
module Settings =
    let private num (f: float) = f.ToString("G6", CultureInfo.InvariantCulture)

    let scheduleName = function Cosine -> "cosine" | Linear -> "linear" | Constant -> "constant" | Step _ -> "step"
    let selectionName = function LastEpoch -> "last" | BestEpoch -> "best"
    let headName = function FreshHead -> "fresh" | ReuseHead -> "reuse"

    /// The YAML key of a setting (two settings with one key are values of one axis).
    let key (s: Setting) =
        match s with
        | Setting.Epochs _ -> "epochs"
        | Setting.Batch _ -> "batch"
        | Setting.Lr _ -> "lr"
        | Setting.Warmup _ -> "warmup"
        | Setting.WeightDecay _ -> "weight_decay"
        | Setting.Device _ -> "device"
        | Setting.Precision _ -> "precision"
        | Setting.ImageSize _ -> "image_size"
        | Setting.Schedule _ -> "sched"
        | Setting.MinLr _ -> "min_lr"
        | Setting.ClipGrad _ -> "clip_grad"
        | Setting.GradAccum _ -> "gradient_accumulation_steps"
        | Setting.LabelSmoothing _ -> "label_smoothing"
        | Setting.HFlip _ -> "hflip"
        | Setting.CropPadding _ -> "crop_padding"
        | Setting.RandomResizedCrop _ -> "random_resized_crop"
        | Setting.Patience _ -> "early_stopping_patience"
        | Setting.Select _ -> "select"
        | Setting.Head _ -> "head"

    /// A short label for run names: "lr0.003", "wd0.05", "ep5", "bs64", "sched-linear", "head-reuse".
    let label (s: Setting) =
        let opt f = function Some v -> f v | None -> "none"
        match s with
        | Setting.Epochs e -> sprintf "ep%d" e
        | Setting.Batch b -> sprintf "bs%d" b
        | Setting.Lr l -> "lr" + num l
        | Setting.Warmup w -> sprintf "wu%d" w
        | Setting.WeightDecay w -> "wd" + num w
        | Setting.Device d -> (match d with Cpu -> "cpu" | Cuda -> "cuda")
        | Setting.Precision p -> (match p with Fp32 -> "fp32" | Bf16 -> "bf16" | Fp16 -> "fp16")
        | Setting.ImageSize s -> sprintf "px%d" s
        | Setting.Schedule(Step(e, r)) -> sprintf "sched-step%d-%s" e (num r)
        | Setting.Schedule s -> "sched-" + scheduleName s
        | Setting.MinLr l -> "minlr" + num l
        | Setting.ClipGrad c -> "clip" + opt num c
        | Setting.GradAccum a -> sprintf "accum%d" a
        | Setting.LabelSmoothing l -> "ls" + num l
        | Setting.HFlip f -> if f then "hflip" else "noflip"
        | Setting.CropPadding p -> sprintf "pad%d" p
        | Setting.RandomResizedCrop c -> "rrc" + opt num c
        | Setting.Patience p -> "patience" + opt string p
        | Setting.Select s -> "select-" + selectionName s
        | Setting.Head h -> "head-" + headName h

    /// The training with the setting applied.
    let apply (t: Training) (s: Setting) : Training =
        match s with
        | Setting.Epochs v -> { t with Epochs = v }
        | Setting.Batch v -> { t with Batch = v }
        | Setting.Lr v -> { t with Lr = v }
        | Setting.Warmup v -> { t with Warmup = v }
        | Setting.WeightDecay v -> { t with WeightDecay = v }
        | Setting.Device v -> { t with Device = v }
        | Setting.Precision v -> { t with Precision = v }
        | Setting.ImageSize v -> { t with ImageSize = Some v }
        | Setting.Schedule v -> { t with Schedule = v }
        | Setting.MinLr v -> { t with MinLr = v }
        | Setting.ClipGrad v -> { t with ClipGrad = v }
        | Setting.GradAccum v -> { t with GradAccum = v }
        | Setting.LabelSmoothing v -> { t with LabelSmoothing = v }
        | Setting.HFlip v -> { t with HFlip = v }
        | Setting.CropPadding v -> { t with CropPadding = v }
        | Setting.RandomResizedCrop v -> { t with RandomResizedCrop = v }
        | Setting.Patience v -> { t with Patience = v }
        | Setting.Select v -> { t with Select = v }
        | Setting.Head v -> { t with Head = v }

    /// Every combination of the axes, in order (the first axis slowest).
    let rec combinations (axes: Setting list list) : Setting list list =
        match axes with
        | [] -> [ [] ]
        | axis :: rest -> [ for s in axis do for tail in combinations rest -> s :: tail ]

    /// The axes of a method's variant over the experiment's: a variant's axis replaces the
    /// experiment's of the same key; the others stay, in the experiment's order first.
    let merge (experiment: Setting list list) (variant: Setting list list) =
        let keyOf (axis: Setting list) = key axis.Head
        let own = variant |> List.filter (List.isEmpty >> not) |> List.map keyOf |> Set.ofList
        (experiment |> List.filter (fun a -> not a.IsEmpty && not (own.Contains(keyOf a)))) @ (variant |> List.filter (List.isEmpty >> not))

    /// The setting of the same key as `s` with the value `t` has (None for an image size left to the model).
    let current (t: Training) (s: Setting) : Setting option =
        match s with
        | Setting.Epochs _ -> Some(Setting.Epochs t.Epochs)
        | Setting.Batch _ -> Some(Setting.Batch t.Batch)
        | Setting.Lr _ -> Some(Setting.Lr t.Lr)
        | Setting.Warmup _ -> Some(Setting.Warmup t.Warmup)
        | Setting.WeightDecay _ -> Some(Setting.WeightDecay t.WeightDecay)
        | Setting.Device _ -> Some(Setting.Device t.Device)
        | Setting.Precision _ -> Some(Setting.Precision t.Precision)
        | Setting.ImageSize _ -> t.ImageSize |> Option.map Setting.ImageSize
        | Setting.Schedule _ -> Some(Setting.Schedule t.Schedule)
        | Setting.MinLr _ -> Some(Setting.MinLr t.MinLr)
        | Setting.ClipGrad _ -> Some(Setting.ClipGrad t.ClipGrad)
        | Setting.GradAccum _ -> Some(Setting.GradAccum t.GradAccum)
        | Setting.LabelSmoothing _ -> Some(Setting.LabelSmoothing t.LabelSmoothing)
        | Setting.HFlip _ -> Some(Setting.HFlip t.HFlip)
        | Setting.CropPadding _ -> Some(Setting.CropPadding t.CropPadding)
        | Setting.RandomResizedCrop _ -> Some(Setting.RandomResizedCrop t.RandomResizedCrop)
        | Setting.Patience _ -> Some(Setting.Patience t.Patience)
        | Setting.Select _ -> Some(Setting.Select t.Select)
        | Setting.Head _ -> Some(Setting.Head t.Head)

    /// Every setting of a training, one per key (the image size only when set).
    let ofTraining (t: Training) : Setting list =
        [ Setting.Epochs 0; Setting.Batch 0; Setting.Lr 0.0; Setting.Warmup 0; Setting.WeightDecay 0.0; Setting.Device Cpu
          Setting.Precision Fp32; Setting.ImageSize 0; Setting.Schedule Cosine; Setting.MinLr 0.0; Setting.ClipGrad None
          Setting.GradAccum 0; Setting.LabelSmoothing 0.0; Setting.HFlip false; Setting.CropPadding 0; Setting.RandomResizedCrop None
          Setting.Patience None; Setting.Select LastEpoch; Setting.Head FreshHead ]
        |> List.choose (current t)
