namespace Lora.Dsl

/// One problem in a spec: where (file, line and column when known, the field's path) and what.
type SpecError =
    { File: string
      /// 1-based; 0 when unknown (specs built in F#)
      Line: int
      Column: int
      /// the field's path, e.g. "experiments[0].ranks[1]"
      Field: string
      Message: string }

    member private e.Where =
        match e.File, e.Line with
        | "", 0 -> ""
        | f, 0 -> f + ": "
        // F# specs: the line of the builder operation (no column)
        | f, l when e.Column = 0 -> sprintf "%s:%d: " f l
        | f, l -> sprintf "%s:%d:%d: " f l e.Column

    override e.ToString() = sprintf "%s%s: %s" e.Where e.Field e.Message

    /// The same line for a problem that does not stop a run: "file:line:col: warning: field: message".
    member e.ToWarningString() = sprintf "%swarning: %s: %s" e.Where e.Field e.Message

/// Raised by the builders' Run and by Spec loading when a spec is invalid: carries every problem.
exception SpecException of SpecError list
    with
        override x.Message =
            match x :> exn with
            | SpecException errs -> "invalid spec:\n" + (errs |> List.map string |> String.concat "\n")
            | _ -> "invalid spec"

/// Where the data sets of the installed packages live.
module DataDefaults =
    /// Debian's dataset-fashion-mnist package.
    let fashionMnist = "/usr/share/datasets/fashion-mnist"

/// Sizes refused up front, so that no run fails later inside libtorch (or a spec takes minutes to expand).
module Limits =
    let maxRuns = 10000
    let maxBatch = 65536
    let maxImageSize = 4096
    let maxRank = 4096
    /// BottleneckAdapter.MaxRatio in Lora.Core
    let maxAdapterRatio = 4.0

/// Checks of records (however they were built). Every check runs; nothing stops at the first error.
module Validation =
    let private err field message = { File = ""; Line = 0; Column = 0; Field = field; Message = message }

    /// A name that becomes part of run ids, file names and terminal output: no control or format
    /// characters (NUL, the ESC of a terminal escape sequence, bidirectional overrides), no path
    /// separators or wildcards, not "." or "..".
    let nameProblem (name: string) =
        let hidden (c: char) =
            System.Char.IsControl c
            || (match System.Globalization.CharUnicodeInfo.GetUnicodeCategory c with
                | System.Globalization.UnicodeCategory.Format
                | System.Globalization.UnicodeCategory.LineSeparator
                | System.Globalization.UnicodeCategory.ParagraphSeparator -> true
                | _ -> false)
        let shown = name |> String.collect (fun c -> if hidden c then sprintf "\\u%04x" (int c) else string c)
        if System.String.IsNullOrWhiteSpace name then Some "must not be empty"
        else match name |> Seq.tryFind hidden with
             | Some c -> Some(sprintf "name '%s' holds the control character U+%04X: use letters, digits and punctuation" shown (int c))
             | None when name.IndexOfAny([| '/'; '\\'; '*'; '?' |]) >= 0 -> Some(sprintf "name '%s' must not contain / \\ * or ?" name)
             | None when name = "." || name = ".." -> Some(sprintf "name '%s' is not a usable name" name)
             | None -> None

    /// Does a file or folder exist (relative paths from the working directory)?
    let pathExists (p: string) = System.IO.File.Exists p || System.IO.Directory.Exists p

    /// How many classes a source has when that is known without reading its data, and what to call
    /// it in a message. CIFAR-10 and CIFAR-100 share a source: the batch files tell them apart as the
    /// runner does (train.bin is CIFAR-100); with neither found, 100 is the most any CIFAR has.
    /// Image folders and segmentation pairs: None (their folders tell; the runner checks).
    let classCount (exists: string -> bool) (source: DataSource) : (int * string) option =
        let under (root: string) (sub: string) (file: string) =
            exists (System.IO.Path.Combine(root, file)) || exists (System.IO.Path.Combine(root, sub, file))
        match source with
        | FashionMnist _ | Composed _ -> Some(10, "Fashion-MNIST")
        | Cifar p when under p "cifar-100-binary" "train.bin" -> Some(100, "CIFAR-100")
        | Cifar p when under p "cifar-10-batches-bin" "data_batch_1.bin" -> Some(10, "CIFAR-10")
        | Cifar _ -> Some(100, "CIFAR")
        | ImageFolder _ | SegmentationPairs _ -> None

    /// A class selection: not empty, each class once, each inside the source's classes when their
    /// number is known here. Errors name the offending entry (classes[i]).
    let classSelection (at: string) (count: (int * string) option) (cs: int list) =
        [ if List.isEmpty cs then yield err at "classes is empty: list at least one class, or leave it out for all"
          for i, c in List.indexed cs do
              let here = sprintf "%s[%d]" at i
              match count with
              | Some(n, name) when c < 0 || c >= n ->
                  yield err here (sprintf "class %d is outside %s's %d classes: use 0-%d" c name n (n - 1))
              | None when c < 0 -> yield err here (sprintf "class %d is negative: classes are numbered from 0" c)
              | _ -> ()
              match List.tryFindIndex ((=) c) (List.take i cs) with
              | Some first -> yield err here (sprintf "class %d is listed twice (also classes[%d]): list each class once" c first)
              | None -> () ]

    // What the core says of a zoo model's options without running it (an option the model does not
    // take, a shape it refuses), as (option key or "" for the model, message). The DSL does not know
    // the core: Lora.Convert supplies it for one check (ToCore.checkSpec), in that call's flow only.
    let private modelCheckHook = System.Threading.AsyncLocal<ZooModel -> (string * string) list>()

    let private modelCheck (m: ZooModel) =
        match box modelCheckHook.Value with
        | null -> []
        | _ -> modelCheckHook.Value m

    /// Runs `f` with `check` consulted for every zoo model validated meanwhile (in this flow).
    let withModelCheck (check: ZooModel -> (string * string) list) (f: unit -> 'a) : 'a =
        let previous = modelCheckHook.Value
        modelCheckHook.Value <- check
        try f () finally modelCheckHook.Value <- previous

    let zooModel (at: string) (m: ZooModel) =
      let own =
        [ if not (ZooNames.isKnown m.Name) then
              yield err (at + ".zoo")
                        (sprintf "unknown model '%s'%s; known models: %s" m.Name (ZooNames.didYouMean ZooNames.all m.Name)
                             (String.concat ", " ZooNames.all))
          for KeyValue(k, v) in m.Options do
              match v with
              // (window_size 0 is SAM's global attention)
              | Int i when i <= 0 && ((k.EndsWith "_size" && k <> "window_size") || k = "depth" || k = "embed_dim" || k = "num_heads" || k = "in_chans" || k = "num_classes") ->
                  yield err (sprintf "%s.options.%s" at k) (sprintf "%s must be positive, got %d" k i)
              // images are read as grey or RGB and converted between the two, nothing else
              | Int i when k = "in_chans" && i <> 1 && i <> 3 ->
                  yield err (sprintf "%s.options.%s" at k)
                            (sprintf "in_chans %d: images are read as 1 (grey) or 3 (RGB) channels and converted only between those; use in_chans 1 or 3" i)
              | _ -> () ]
      // the model built from its options (on the meta device) once they pass the checks above
      if not own.IsEmpty then own
      else [ for k, message in modelCheck m -> err (if k = "" then at + ".zoo" else sprintf "%s.options.%s" at k) message ]

    let dataset (exists: string -> bool) (at: string) (task: Task) (d: DatasetView) =
        let needPath field p kind =
            [ if System.String.IsNullOrWhiteSpace p then yield err (at + "." + field) (sprintf "%s needs a path" kind)
              elif not (exists p) then
                  yield err (at + "." + field) (sprintf "%s data set not found at '%s': check the path (relative paths start at the spec file's folder)" kind p) ]
        [ match d.Source with
          | FashionMnist p ->
              let path = defaultArg p DataDefaults.fashionMnist
              if not (exists path) then
                  yield err (at + ".path")
                            (if p.IsNone then sprintf "Fashion-MNIST is not installed at %s: apt-get install dataset-fashion-mnist, or give its folder as path" path
                             else sprintf "Fashion-MNIST data set not found at '%s'" path)
          | Cifar p -> yield! needPath "path" p "CIFAR"
          | ImageFolder p -> yield! needPath "path" p "image folder"
          | SegmentationPairs p -> yield! needPath "path" p "segmentation pairs"
          | Composed c ->
              if c.Canvas < 28 then yield err (at + ".canvas") (sprintf "canvas must be at least 28 pixels (one Fashion-MNIST object), got %d" c.Canvas)
              if c.Objects < 1 then yield err (at + ".objects") (sprintf "objects must be at least 1, got %d" c.Objects)
              let path = defaultArg c.Path DataDefaults.fashionMnist
              if not (exists path) then yield err (at + ".path") (sprintf "Fashion-MNIST (the objects' source) not found at '%s'" path)
          let segmentationData = match d.Source with SegmentationPairs _ | Composed _ -> true | _ -> false
          match task with
          | Segmentation when not segmentationData ->
              yield err (at + ".source") "a segmentation task needs segmentation data (segmentation_pairs or composed_segmentation)"
          | Classification when segmentationData ->
              yield err (at + ".source") "a classification task needs labelled images (fashion_mnist, cifar or image_folder), not masks"
          | _ -> ()
          match d.Source, d.Classes with
          // the masks hold the classes of segmentation pairs: there is no class subset to cut
          | SegmentationPairs _, cs ->
              if cs.IsSome then yield err (at + ".classes") "classes does not apply to segmentation_pairs (the masks define the classes): remove it"
              if d.ShotsPerClass.IsSome then
                  yield err (at + ".shots") "shots does not apply to segmentation_pairs (its images have no class label): remove it"
          | source, Some cs -> yield! classSelection (at + ".classes") (classCount exists source) cs
          | _, None -> ()
          match d.ShotsPerClass with Some s when s <= 0 -> yield err (at + ".shots") (sprintf "shots must be positive, got %d" s) | _ -> ()
          match d.LimitTrain with Some s when s <= 0 -> yield err (at + ".limit_train") (sprintf "limit_train must be positive, got %d" s) | _ -> ()
          match d.LimitVal with Some s when s <= 0 -> yield err (at + ".limit_val") (sprintf "limit_val must be positive, got %d" s) | _ -> ()
          if not (d.ValFraction >= 0.0 && d.ValFraction < 1.0) then
              yield err (at + ".val_fraction") (sprintf "val_fraction must be in [0, 1), got %g" d.ValFraction)
          else
              match d.Source with
              | ImageFolder _ | SegmentationPairs _ when d.ValFraction = 0.0 ->
                  yield err (at + ".val_fraction") "val_fraction 0 leaves no validation images: this source is split into training and validation by it (e.g. 0.1)"
              | _ -> () ]

    let rec training (at: string) (t: Training) =
        [ if t.Epochs < 1 then yield err (at + "epochs") (sprintf "epochs must be at least 1, got %d" t.Epochs)
          if t.Batch < 1 then yield err (at + "batch") (sprintf "batch must be at least 1, got %d" t.Batch)
          if not (t.Lr > 0.0) then yield err (at + "lr") (sprintf "lr must be positive, got %g" t.Lr)
          if t.Warmup < 0 then yield err (at + "warmup") (sprintf "warmup must not be negative, got %d" t.Warmup)
          if not (t.WeightDecay >= 0.0) then yield err (at + "weight_decay") (sprintf "weight_decay must not be negative, got %g" t.WeightDecay)
          // caught here rather than when the run starts (after any pretraining it depends on)
          if t.Precision = Fp16 then
              yield err (at + "precision") "precision fp16 is not supported (no autocast or loss scaling in TorchSharp): use bf16 (fp32 master weights) or fp32"
          if t.Batch > Limits.maxBatch then yield err (at + "batch") (sprintf "batch %d is more than the %d allowed" t.Batch Limits.maxBatch)
          match t.ImageSize with
          | Some s when s <= 0 -> yield err (at + "image_size") (sprintf "image_size must be positive, got %d" s)
          | Some s when s > Limits.maxImageSize -> yield err (at + "image_size") (sprintf "image_size %d is more than the %d allowed" s Limits.maxImageSize)
          | _ -> ()
          yield! recipe at t ]

    /// The recipe's settings (schedule, clipping, accumulation, smoothing, augmentation, early stopping).
    and private recipe (at: string) (t: Training) =
        [ match t.Schedule with
          | Step(e, _) when e < 1 -> yield err (at + "decay_epochs") (sprintf "decay_epochs must be at least 1, got %d" e)
          | Step(_, r) when not (r > 0.0 && r <= 1.0) -> yield err (at + "decay_rate") (sprintf "decay_rate must be in (0, 1], got %g" r)
          | _ -> ()
          if not (t.MinLr >= 0.0 && t.MinLr <= t.Lr) then yield err (at + "min_lr") (sprintf "min_lr must be in [0, lr], got %g" t.MinLr)
          match t.ClipGrad with
          | Some c when not (c > 0.0) -> yield err (at + "clip_grad") (sprintf "clip_grad must be positive (or none for no clipping), got %g" c)
          | _ -> ()
          if t.GradAccum < 1 then yield err (at + "gradient_accumulation_steps") (sprintf "gradient_accumulation_steps must be at least 1, got %d" t.GradAccum)
          if not (t.LabelSmoothing >= 0.0 && t.LabelSmoothing < 1.0) then
              yield err (at + "label_smoothing") (sprintf "label_smoothing must be in [0, 1), got %g" t.LabelSmoothing)
          if t.CropPadding < 0 then yield err (at + "crop_padding") (sprintf "crop_padding must not be negative, got %d" t.CropPadding)
          match t.RandomResizedCrop with
          | Some s when not (s > 0.0 && s <= 1.0) ->
              yield err (at + "random_resized_crop") (sprintf "random_resized_crop is the smallest area fraction, in (0, 1] (timm: 0.08), got %g" s)
          | _ -> ()
          match t.Patience with
          | Some p when p < 1 -> yield err (at + "early_stopping_patience") (sprintf "early_stopping_patience must be at least 1 epoch, got %d" p)
          | _ -> () ]

    let pretrain exists (at: string) (p: Pretrain) =
        [ if System.String.IsNullOrWhiteSpace p.Name then yield err (at + ".name") "a pretrain step needs a name"
          else match nameProblem p.Name with Some m -> yield err (at + ".name") m | None -> ()
          yield! zooModel (at + ".model") p.Model
          yield! dataset exists (at + ".dataset") p.Task p.Dataset
          yield! training (at + ".") p.Training ]

    let baseModel exists (at: string) (m: BaseModel) =
        match m with
        | Zoo z -> zooModel at z
        | FromPretrain p -> pretrain exists (at + ".pretrain") p
        | Onnx z ->
            [ if not (exists z.Name) then yield err (at + ".onnx") (sprintf "ONNX file not found at '%s' (relative paths start at the spec file's folder)" z.Name)
              elif not (z.Name.EndsWith(".onnx", System.StringComparison.OrdinalIgnoreCase)) then
                  yield err (at + ".onnx") (sprintf "an ONNX model must be a .onnx file, got '%s'" z.Name) ]
        | Weights(z, path) ->
            [ yield! zooModel at z
              if not (exists path) then
                  yield err (at + ".weights") (sprintf "weights file not found at '%s'" path)
              elif not (path.EndsWith(".safetensors", System.StringComparison.OrdinalIgnoreCase)) then
                  yield err (at + ".weights") (sprintf "weights must be a .safetensors file, got '%s'" path) ]

    let loraOptions (at: string) (o: LoraOptions) =
        [ match o.Alpha with Some a when not (a > 0.0) -> yield err (at + ".alpha") (sprintf "alpha must be positive, got %g" a) | _ -> ()
          if not (o.Dropout >= 0.0 && o.Dropout < 1.0) then yield err (at + ".dropout") (sprintf "dropout must be in [0, 1), got %g" o.Dropout)
          if List.isEmpty o.Targets then yield err (at + ".targets") "targets is empty: name at least one module (e.g. qkv)"
          match o.LoraPlusRatio with
          | Some q when not (q > 0.0 && not (System.Double.IsInfinity q)) -> yield err (at + ".loraplus_lr_ratio") (sprintf "loraplus_lr_ratio must be a positive number (LoRA+ trains lora_B at ratio × lr; the paper uses 16), got %g" q)
          | _ -> ()
          for p in o.FusedQkv do
              if not (List.contains p [ "q"; "k"; "v" ]) then yield err (at + ".fused_qkv") (sprintf "fused_qkv part '%s' is not one of q, k, v (the thirds of a fused qkv Linear's out features)" p)
          if List.length (List.distinct o.FusedQkv) <> List.length o.FusedQkv then yield err (at + ".fused_qkv") (sprintf "fused_qkv names a part twice: [%s]" (String.concat ", " o.FusedQkv))
          match o.Init with
          | PissaInit _ | OloraInit when not o.FusedQkv.IsEmpty ->
              yield err (at + ".init") (sprintf "init %s is not defined with fused_qkv (q/v-only LoRA): use default or gaussian" o.Init.Name)
          | _ -> () ]

    let method (at: string) (ranks: int list) (m: Method) =
        [ match m with
          | Full | Head -> ()
          | Lora o -> yield! loraOptions at o
          | Dora o ->
              yield! loraOptions at o
              if not o.FusedQkv.IsEmpty then yield err (at + ".fused_qkv") "fused_qkv (q/v-only LoRA) has no DoRA form: DoRA's magnitude is per out feature of the whole layer; use lora"
          | AdaLora(o, a) ->
              yield! loraOptions at o
              match a.InitRank with
              | Some i ->
                  for r in ranks do
                      if i < r then yield err (at + ".init_rank") (sprintf "init_rank %d is below the target rank %d: AdaLoRA only prunes" i r)
              | None -> ()
              if a.DeltaT < 1 then yield err (at + ".delta_t") (sprintf "delta_t must be at least 1, got %d" a.DeltaT)
              if a.TInit < 0 then yield err (at + ".tinit") (sprintf "tinit must not be negative, got %d" a.TInit)
              if a.TFinal < 0 then yield err (at + ".tfinal") (sprintf "tfinal must not be negative, got %d" a.TFinal)
              for name, b in [ "beta1", a.Beta1; "beta2", a.Beta2 ] do
                  if not (b >= 0.0 && b < 1.0) then yield err (at + "." + name) (sprintf "%s must be in [0, 1), got %g" name b)
              // PEFT (and the core) reject 0: the regulariser keeps P and Q orthogonal, AdaLoRA's premise
              if not (a.OrthReg > 0.0) then yield err (at + ".orth_reg") (sprintf "orth_reg must be positive, got %g" a.OrthReg)
          | Adapter a ->
              match a.Ratio with
              | Some r when not (r > 0.0) -> yield err (at + ".ratio") (sprintf "ratio must be positive, got %g" r)
              | Some r when not (r <= Limits.maxAdapterRatio) ->
                  yield err (at + ".ratio") (sprintf "ratio must be at most %g (the bottleneck's width over the block's), got %g" Limits.maxAdapterRatio r)
              | _ -> ()
              if not (a.Scale > 0.0) then yield err (at + ".scale") (sprintf "scale must be positive, got %g" a.Scale)
          | BitFit _ | LnTuning _ | Ssf _ -> ()
          | Ia3 o ->
              if List.isEmpty o.Ia3Targets then yield err (at + ".targets") "targets is empty: name at least one module (e.g. qkv, fc2)"
              for f in o.Feedforward do
                  if not (List.contains f o.Ia3Targets) then
                      yield err (at + ".feedforward") (sprintf "feedforward module '%s' is not among the targets (PEFT: feedforward_modules ⊆ target_modules)" f)
          | Vpt _ ->
              for r in ranks do
                  if r > 1024 then yield err at (sprintf "VPT takes at most 1024 prompt tokens (the rank), got %d" r)
          | AdaptFormer o ->
              if not (o.AdaptFormerScale > 0.0) then yield err (at + ".scale") (sprintf "scale must be positive, got %g" o.AdaptFormerScale)
          | Convpass o ->
              if not (o.ConvpassScale > 0.0) then yield err (at + ".scale") (sprintf "scale must be positive, got %g" o.ConvpassScale)
          | Fact o ->
              if not (o.FactScale > 0.0) then yield err (at + ".scale") (sprintf "scale must be positive, got %g" o.FactScale)
              if List.isEmpty o.FactTargets then yield err (at + ".targets") "targets is empty: name the Linears to tune (the paper's qkv, proj, fc1, fc2)"
          | Vera o ->
              if List.isEmpty o.VeraTargets then yield err (at + ".targets") "targets is empty: name at least one module (e.g. qkv)"
              if o.ProjectionPrngKey < 0 then yield err (at + ".projection_prng_key") (sprintf "projection_prng_key must not be negative, got %d" o.ProjectionPrngKey)
          | Oft o ->
              if List.isEmpty o.OftTargets then yield err (at + ".targets") "targets is empty: name at least one module (e.g. qkv)"
              match o.Blocks with Some n when n < 1 -> yield err (at + ".blocks") (sprintf "blocks must be positive, got %d" n) | _ -> ()
              for r in ranks do
                  if o.Blocks.IsNone && r < 2 then yield err at (sprintf "OFT's rank is its block size (oft_block_size), at least 2; got %d" r)
              if o.Coft && not (o.Eps > 0.0) then yield err (at + ".eps") (sprintf "eps must be positive, got %g" o.Eps)
              if not (o.OftModuleDropout >= 0.0 && o.OftModuleDropout < 1.0) then
                  yield err (at + ".module_dropout") (sprintf "module_dropout must be in [0, 1), got %g" o.OftModuleDropout)
          | Boft o ->
              if List.isEmpty o.BoftTargets then yield err (at + ".targets") "targets is empty: name at least one module (e.g. qkv)"
              match o.BoftBlocks with Some n when n < 1 -> yield err (at + ".blocks") (sprintf "blocks must be positive, got %d" n) | _ -> ()
              if o.Butterfly < 1 then yield err (at + ".butterfly") (sprintf "butterfly must be at least 1, got %d" o.Butterfly)
              if not (o.BoftDropout >= 0.0 && o.BoftDropout < 1.0) then
                  yield err (at + ".dropout") (sprintf "dropout must be in [0, 1), got %g" o.BoftDropout)
          | Hra o ->
              if List.isEmpty o.HraTargets then yield err (at + ".targets") "targets is empty: name at least one module (e.g. qkv)"
          | LoHa o | LoKr o ->
              match o.LycorisAlpha with Some a when not (a > 0.0) -> yield err (at + ".alpha") (sprintf "alpha must be positive, got %g" a) | _ -> ()
              if List.isEmpty o.LycorisTargets then yield err (at + ".targets") "targets is empty: name at least one module (e.g. qkv)"
              if o.DecomposeFactor = 0 || o.DecomposeFactor < -1 then
                  yield err (at + ".decompose_factor") (sprintf "decompose_factor must be positive or -1, got %d" o.DecomposeFactor)
          if m.UsesRank && List.isEmpty ranks then
              yield err at (sprintf "%s needs ranks: add e.g. ranks [4; 8]" m.Name) ]

    /// Grid.size without overflow (a spec can multiply long lists).
    let private runCount (e: Experiment) =
        let perMethod =
            Grid.entries e
            |> List.sumBy (fun v ->
                let perChoice = v.Choices |> List.sumBy (fun (_, m) -> if m.UsesRank then int64 e.Ranks.Length else 1L)
                Settings.merge e.Sweeps v.Training |> List.fold (fun n a -> n * int64 a.Length) perChoice)
        int64 e.Models.Length * int64 e.Datasets.Length * int64 e.Seeds.Length * perMethod

    /// Every problem of an experiment's table declarations (`at` is "experiments[0].tables").
    let tables (at: string) (ts: TableDecl list) =
        let axis (p: string) (a: string) =
            [ if not (TableVocabulary.isAxis a) then
                  yield err p (sprintf "unknown axis '%s'%s; expected one of %s, or config.<field>" a
                                 (ZooNames.didYouMean TableVocabulary.axes a) (String.concat ", " TableVocabulary.axes)) ]
        [ for i, t in List.indexed ts do
              let here = sprintf "%s[%d]" at i
              if System.String.IsNullOrWhiteSpace t.Name then yield err (here + ".name") "a table needs a name"
              else match nameProblem t.Name with Some m -> yield err (here + ".name") m | None -> ()
              if List.isEmpty t.Rows then yield err (here + ".rows") "a table needs rows: e.g. rows: [method, rank]"
              for j, a in List.indexed t.Rows do yield! axis (sprintf "%s.rows[%d]" here j) a.Axis
              for j, a in List.indexed t.Columns do yield! axis (sprintf "%s.columns[%d]" here j) a.Axis
              if List.isEmpty t.Cells then yield err (here + ".cells") "a table needs cells: e.g. cells: [accuracy]"
              if not (List.isEmpty t.Columns) && t.Cells.Length > 1 then
                  yield err (here + ".cells") "a table with columns shows one cell metric per column value: give one cell"
              for j, c in List.indexed t.Cells do
                  let p = sprintf "%s.cells[%d]" here j
                  if not (List.contains c.Metric TableVocabulary.metricNames) then
                      yield err (p + ".metric") (sprintf "unknown metric '%s'%s; expected one of %s" c.Metric
                                                    (ZooNames.didYouMean TableVocabulary.metricNames c.Metric) (String.concat ", " TableVocabulary.metricNames))
                  match c.Format with
                  | Some f when not (List.contains f TableVocabulary.formats || TableVocabulary.isNumericFormat f) ->
                      yield err (p + ".format") (sprintf "unknown format '%s'; expected one of %s, or a numeric format such as F3" f (String.concat ", " TableVocabulary.formats))
                  | _ -> ()
              for a, _ in t.Filters do yield! axis (sprintf "%s.filters.%s" here a) a
              for j, a in List.indexed t.Order do yield! axis (sprintf "%s.order[%d]" here j) a
              if t.Baseline.IsSome && not (List.isEmpty t.Columns) then
                  yield err (here + ".baseline") "a baseline adds a Δ column: it needs a table without columns (one column per cell)"
          for n in ts |> List.map (fun t -> t.Name) |> List.countBy id |> List.filter (fun (_, c) -> c > 1) |> List.map fst do
              yield err at (sprintf "two tables are named '%s'" n) ]

    /// Training axes (the experiment's lists, a variant's settings): not empty, one key per axis and
    /// one axis per key, no value twice, each value valid. `at` ends with "." (the keys follow).
    let settingAxes (at: string) (axes: Setting list list) =
        [ for axis in axes do
              match axis with
              | [] -> yield err (at.TrimEnd '.') "a setting's list of values is empty: give at least one value"
              | first :: _ ->
                  let key = Settings.key first
                  if axis |> List.exists (fun s -> Settings.key s <> key) then
                      yield err (at + key) (sprintf "the values of one list must all be %s" key)
                  if List.distinct axis <> axis then yield err (at + key) (sprintf "%s lists a value twice" key)
                  for s in axis do
                      let t = Settings.apply Training.Defaults s
                      // the lr's bound applies to min_lr against its own run's lr, checked on the runs
                      yield! training at { t with MinLr = min t.MinLr t.Lr }
          for key, n in axes |> List.choose List.tryHead |> List.countBy Settings.key do
              if n > 1 then yield err (at + key) (sprintf "%s is given twice" key) ]

    /// A variant: a usable name, choices (each a valid method), valid settings of its own.
    let variant (at: string) (ranks: int list) (v: Variant) =
        [ match v.Name with
          | Some n -> match nameProblem n with Some m -> yield err (at + ".name") m | None -> ()
          | None -> ()
          if List.isEmpty v.Choices then yield err at "a method variant needs at least one method"
          for _, m in v.Choices do yield! method at ranks m
          yield! settingAxes (at + ".") v.Training ]

    /// Every problem of an experiment's combinations (`at` is "experiments[0].combine") among its
    /// runs: each adapter a plain LoRA run of the experiment, all on one model and data set.
    let combinations (at: string) (runs: Run list) (cs: AdapterCombination list) =
        let names = runs |> List.map (fun r -> r.Name)
        [ for i, c in List.indexed cs do
              let here = sprintf "%s[%d]" at i
              match nameProblem c.Name with
              | Some m -> yield err (here + ".name") m
              | None when List.contains c.Name names -> yield err (here + ".name") (sprintf "'%s' is already the name of a run: give the combination its own" c.Name)
              | None -> ()
              if List.isEmpty c.Adapters then yield err (here + ".adapters") "a combination needs adapters: [{ run: lora-r4, weight: 0.5 }, ...]"
              let sources =
                  [ for j, (name, w) in List.indexed c.Adapters do
                        let p = sprintf "%s.adapters[%d]" here j
                        if not (System.Double.IsFinite w) then yield None, err (p + ".weight") (sprintf "weight must be a finite number, got %g" w)
                        match runs |> List.tryFind (fun r -> r.Name = name) with
                        | None ->
                            yield None, err (p + ".run") (sprintf "no run '%s' in this experiment%s; its runs: %s" name (ZooNames.didYouMean names name) (String.concat ", " (List.truncate 12 names)))
                        | Some r ->
                            match r.Method with
                            | Lora o when o.Bias <> NoBias ->
                                yield None, err (p + ".run") (sprintf "'%s' trains biases (bias is not none): combined adapters would overwrite each other's biases" name)
                            | Lora _ -> yield Some r, err p ""
                            | m -> yield None, err (p + ".run") (sprintf "'%s' is a %s run: only plain LoRA adapters combine (PEFT's add_weighted_adapter)" name m.Name) ]
              for _, e in sources do if e.Message <> "" then yield e
              let found = sources |> List.choose fst
              match found with
              | first :: rest ->
                  if rest |> List.exists (fun r -> r.Model <> first.Model || r.Dataset <> first.Dataset) then
                      yield err (here + ".adapters") "the adapters combined must come from runs on one model and one data set"
                  if c.Type = CombinationType.Linear && (found |> List.distinctBy (fun r -> r.Rank)).Length > 1 then
                      yield err (here + ".combination") "linear combines adapters of one rank: use cat or svd for different ranks"
              | [] -> ()
              match c.SvdRank with
              | Some k when c.Type <> CombinationType.Svd -> yield err (here + ".svd_rank") (sprintf "svd_rank %d applies to combination svd only" k)
              | Some k when k < 1 -> yield err (here + ".svd_rank") (sprintf "svd_rank must be positive, got %d" k)
              | _ -> ()
          for n in cs |> List.map (fun c -> c.Name) |> List.countBy id |> List.filter (fun (_, k) -> k > 1) |> List.map fst do
              yield err at (sprintf "two combinations are named '%s'" n) ]

    /// Every problem of one experiment; `at` is its path ("experiments[0]").
    let experiment (exists: string -> bool) (at: string) (e: Experiment) =
        [ if System.String.IsNullOrWhiteSpace e.Name then yield err (at + ".name") "an experiment needs a name"
          else match nameProblem e.Name with Some m -> yield err (at + ".name") m | None -> ()
          if List.isEmpty e.Models then yield err (at + ".models") "no model: add model (zoo \"vit_tiny_patch16_224\" [])"
          for i, m in List.indexed e.Models do yield! baseModel exists (sprintf "%s.models[%d]" at i) m
          if List.isEmpty e.Datasets then yield err (at + ".datasets") "no dataset: add a dataset"
          for i, d in List.indexed e.Datasets do yield! dataset exists (sprintf "%s.datasets[%d]" at i) e.Task d
          if List.isEmpty e.Methods && List.isEmpty e.Variants then yield err (at + ".methods") "no method: add e.g. methods [lora]"
          for i, m in List.indexed e.Methods do yield! method (sprintf "%s.methods[%d]" at i) e.Ranks m
          // variants follow the plain methods (the YAML reader marks their paths so)
          for i, v in List.indexed e.Variants do yield! variant (sprintf "%s.methods[%d]" at (e.Methods.Length + i)) e.Ranks v
          yield! settingAxes (at + ".") e.Sweeps
          for i, r in List.indexed e.Ranks do
              match Rank.Create r with
              | Error msg -> yield err (sprintf "%s.ranks[%d]" at i) msg
              | Ok _ when r > Limits.maxRank -> yield err (sprintf "%s.ranks[%d]" at i) (sprintf "rank %d is more than the %d allowed" r Limits.maxRank)
              | Ok _ -> ()
          if List.distinct e.Ranks <> e.Ranks then yield err (at + ".ranks") "ranks has duplicates"
          if List.isEmpty e.Seeds then yield err (at + ".seeds") "seeds is empty: give at least one seed"
          if List.distinct e.Seeds <> e.Seeds then yield err (at + ".seeds") "seeds has duplicates"
          yield! training (at + ".") e.Training
          yield! tables (at + ".tables") e.Tables
          // counted before anything is expanded: a few lines of spec can describe millions of runs
          let size = runCount e
          if size > int64 Limits.maxRuns then
              yield err at (sprintf "the grid expands to %d runs (models × datasets × methods and ranks × seeds), more than the %d allowed: split it" size Limits.maxRuns)
          else
              yield! combinations (at + ".combine") (Grid.expand e) e.Combinations
              let names = Grid.expand e |> List.map (fun r -> r.Name)
              for n in names |> List.countBy id |> List.filter (fun (_, c) -> c > 1) |> List.map fst do
                  yield err (at + ".methods") (sprintf "two runs would be named '%s': a method, model or dataset is listed twice (give method variants their own name: ...)" n)
              // min_lr against each run's own lr (a variant's lr with the experiment's min_lr)
              let runs = Grid.expand e
              match runs |> List.tryFind (fun r -> r.Training.MinLr > r.Training.Lr) with
              | Some r when e.Training.MinLr <= e.Training.Lr ->
                  yield err (at + ".min_lr") (sprintf "min_lr %g is above the lr %g of run '%s'" r.Training.MinLr r.Training.Lr r.Name)
              | _ -> ()
              if e.Task = Segmentation then
                  if runs |> List.exists (fun r -> r.Training.CropPadding > 0 || r.Training.RandomResizedCrop.IsSome) then
                      yield err (at + ".random_resized_crop") "crop_padding and random_resized_crop apply to classification only (masks are not cropped); hflip works for both"
                  if runs |> List.exists (fun r -> r.Training.LabelSmoothing > 0.0) then
                      yield err (at + ".label_smoothing") "label_smoothing applies to classification only" ]

    /// Every problem of a suite of experiments (paths "experiments[i]...").
    let suite (exists: string -> bool) (es: Experiment list) =
        [ for i, e in List.indexed es do yield! experiment exists (sprintf "experiments[%d]" i) e
          let total = es |> List.sumBy runCount
          if total > int64 Limits.maxRuns && es |> List.forall (fun e -> runCount e <= int64 Limits.maxRuns) then
              yield err "experiments" (sprintf "the spec expands to %d runs, more than the %d allowed: split it" total Limits.maxRuns)
          for n in es |> List.map (fun e -> e.Name) |> List.countBy id |> List.filter (fun (_, c) -> c > 1) |> List.map fst do
              yield err "experiments" (sprintf "two experiments are named '%s'" n)
          // one name, one pretrain: a name used for two different configurations would share results
          let pres = es |> List.collect Grid.pretrains |> List.distinct
          for n in pres |> List.countBy (fun p -> p.Name) |> List.filter (fun (_, c) -> c > 1) |> List.map fst do
              yield err "experiments" (sprintf "two different pretrain steps are named '%s'" n) ]

    // What the core says of a run without running it (Lora.Convert's ToCore.checkRunAt, on the meta
    // device): (the part it concerns, "model" or "method", message). Supplied by `lora validate`
    // for its call's flow only, as the model check above.
    let private runCheckHook = System.Threading.AsyncLocal<Run -> (string * string) list>()

    /// Runs `f` with `check` consulted for every run of the specs loaded meanwhile (in this flow).
    let withRunCheck (check: Run -> (string * string) list) (f: unit -> 'a) : 'a =
        let previous = runCheckHook.Value
        runCheckHook.Value <- check
        try f () finally runCheckHook.Value <- previous

    /// Every problem the core would meet in the experiments' runs (none without a run check), at
    /// the run's model or method entry ("experiments[0].methods[2]"), each run once.
    let runs (es: Experiment list) : SpecError list =
        match box runCheckHook.Value with
        | null -> []
        | _ ->
            let check = runCheckHook.Value
            // what the core's checks read of a run: runs that differ only in seed or settings are checked once
            let seen = System.Collections.Generic.HashSet<_>(HashIdentity.Structural)
            let fresh (r: Run) = seen.Add((r.Model, r.Dataset.Classes, r.Method, r.Rank))
            [ for i, e in List.indexed es do
                  for mi, m in List.indexed e.Models do
                      match m with
                      | FromPretrain p when fresh (Grid.pretrainRun p) ->
                          let r = Grid.pretrainRun p
                          for _, message in check r do
                              yield err (sprintf "experiments[%d].models[%d].pretrain" i mi) (sprintf "%s: %s" r.Id message)
                      | _ -> ()
                  for r, mi, ei in Grid.expandWithOrigins e do
                      if fresh r then
                          for part, message in check r do
                              let at =
                                  match part with
                                  | "model" when mi >= 0 -> sprintf "experiments[%d].models[%d]" i mi
                                  | _ when ei >= 0 -> sprintf "experiments[%d].methods[%d]" i ei
                                  | _ -> sprintf "experiments[%d]" i
                              yield err at (sprintf "%s: %s" r.Id message) ]
