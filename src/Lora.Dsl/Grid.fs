namespace Lora.Dsl

/// Expansion of an experiment's grid into one fully resolved run per cell.
module Grid =
    /// A short label for a data source ("fashion_mnist", "cifar-batches", ...), used in run names and tables.
    let datasetLabel (d: DatasetView) =
        let baseName (p: string) = System.IO.Path.GetFileName(p.TrimEnd('/', '\\'))
        let source =
            match d.Source with
            | FashionMnist _ -> "fashion_mnist"
            | Cifar p -> "cifar-" + baseName p
            | ImageFolder p -> baseName p
            | SegmentationPairs p -> baseName p
            | Composed _ -> "composed_segmentation"
        // views of one source must get distinct labels: classes, then shots
        let classes =
            match d.Classes with
            | Some(first :: _ as cs) when cs = [ first .. first + cs.Length - 1 ] -> sprintf "-c%d-%d" first (first + cs.Length - 1)
            | Some cs -> "-c" + String.concat "," (List.map string cs)
            | None -> ""
        let shots = match d.ShotsPerClass with Some k -> sprintf "-%dshot" k | None -> ""
        source + classes + shots

    /// A short label for a base model: its zoo name, pretrain name or weights file.
    let modelLabel (m: BaseModel) =
        match m with
        | Zoo z -> z.Name
        | FromPretrain p -> p.Name
        | Weights(z, path) -> z.Name + "-" + System.IO.Path.GetFileNameWithoutExtension path
        | Onnx z -> System.IO.Path.GetFileNameWithoutExtension z.Name

    /// AdaLoRA's initial rank when only the target r is given: ⌈1.5 r⌉ (PEFT's 12 at its default 8).
    let resolveInitRank (r: int) = (3 * r + 1) / 2

    /// Fill the defaults that depend on the rank (alpha = 2 × rank, AdaLoRA init_r = ⌈1.5 × rank⌉,
    /// written (3r + 1) / 2 in integers): the one place that decides them, for specs, `lora summary`
    /// and `lora bench` alike (through Lora.Convert).
    let resolveMethod (rank: int option) (m: Method) =
        let lora (o: LoraOptions) =
            match o.Alpha, rank with
            | None, Some r -> { o with Alpha = Some(2.0 * float r) }
            | _ -> o
        match m with
        | Lora o -> Lora(lora o)
        | Dora o -> Dora(lora o)
        | AdaLora(o, a) ->
            let a =
                match a.InitRank, rank with
                | None, Some r -> { a with InitRank = Some(resolveInitRank r) }
                | _ -> a
            AdaLora(lora o, a)
        | m -> m

    /// The run that a pretrain step compiles to: full training of the zoo model from scratch.
    let pretrainRun (p: Pretrain) =
        { Kind = Pretraining
          Experiment = "pretrain"
          Name = p.Name
          Model = Zoo p.Model
          Dataset = p.Dataset
          Task = p.Task
          Method = Full
          Rank = None
          Seed = p.Seed
          Training = p.Training }

    /// The method declarations of an experiment as variants: the plain methods (no name, one choice,
    /// no settings of their own), then the variants.
    let entries (e: Experiment) : Variant list =
        [ for m in e.Methods -> { Name = None; Choices = [ [], m ]; Training = [] } ] @ e.Variants

    /// Training axes of one declaration: the experiment's, with the variant's replacing those of the
    /// same key. Only the axes with several values name the runs.
    let private axesOf (e: Experiment) (v: Variant) = Settings.merge e.Sweeps v.Training

    /// Number of runs of one declaration per model, dataset and seed: choices × (ranks or 1) × training combinations.
    let private cellsOf (e: Experiment) (v: Variant) =
        let perChoice = v.Choices |> List.sumBy (fun (_, m) -> if m.UsesRank then e.Ranks.Length else 1)
        perChoice * (axesOf e v |> List.fold (fun n a -> n * a.Length) 1)

    /// Number of runs the grid expands to: models × datasets × seeds × Σ(ranks or 1 per method) ×
    /// training combinations.
    let size (e: Experiment) =
        let perMethod = entries e |> List.sumBy (cellsOf e)
        e.Models.Length * e.Datasets.Length * e.Seeds.Length * perMethod

    /// One run per grid cell, in declaration order (models, datasets, methods, ranks, seeds).
    /// Ranks that fail Rank.Create are skipped here; validation reports them.
    /// Names: method (or variant name), rank, the labels of the method options and training settings
    /// that vary, then model, dataset and seed where the experiment lists several.
    let expand (e: Experiment) : Run list =
        let many (xs: _ list) = xs.Length > 1
        [ for model in e.Models do
            for dataset in e.Datasets do
                for variant in entries e do
                    let axes = axesOf e variant
                    for tags, methodDecl in variant.Choices do
                        let ranks =
                            if methodDecl.UsesRank then
                                e.Ranks |> List.choose (fun r -> match Rank.Create r with Ok k -> Some(Some k) | Error _ -> None)
                            else [ None ]
                        for rank in ranks do
                            for settings in Settings.combinations axes do
                                let varying = List.zip axes settings |> List.filter (fun (a, _) -> many a) |> List.map (snd >> Settings.label)
                                for seed in e.Seeds do
                                    let parts =
                                        [ yield defaultArg variant.Name methodDecl.Name
                                          match rank with Some r -> yield sprintf "r%d" r.Value | None -> ()
                                          yield! tags
                                          yield! varying
                                          if many e.Models then yield modelLabel model
                                          if many e.Datasets then yield datasetLabel dataset
                                          if many e.Seeds then yield sprintf "s%d" seed ]
                                    { Kind = Tuning
                                      Experiment = e.Name
                                      Name = String.concat "-" parts
                                      Model = model
                                      Dataset = dataset
                                      Task = e.Task
                                      Method = resolveMethod (rank |> Option.map (fun r -> r.Value)) methodDecl
                                      Rank = rank
                                      Seed = seed
                                      Training = List.fold Settings.apply e.Training settings } ]

    /// Each run of `expand` with the declarations it comes from: (run, model index, method entry
    /// index in `entries`), so that a run's problem can be placed at its model or method.
    let expandWithOrigins (e: Experiment) : (Run * int * int) list =
        let ranks = e.Ranks |> List.filter (fun r -> match Rank.Create r with Ok _ -> true | Error _ -> false)
        let origins =
            [ for mi in 0 .. e.Models.Length - 1 do
                for _ in e.Datasets do
                    for ei, v in List.indexed (entries e) do
                        let perChoice = v.Choices |> List.sumBy (fun (_, m) -> if m.UsesRank then ranks.Length else 1)
                        let n = perChoice * (axesOf e v |> List.fold (fun n a -> n * a.Length) 1) * e.Seeds.Length
                        for _ in 1 .. n -> mi, ei ]
        let runs = expand e
        // the counts mirror expand's loops; should they ever differ, no origin beats a wrong one
        if origins.Length <> runs.Length then [ for r in runs -> r, -1, -1 ]
        else List.map2 (fun r (mi, ei) -> r, mi, ei) runs origins

    /// The runs of an experiment's combinations: each names runs of `expand e`, and runs on the
    /// model, data and settings of the first (a combination naming a run that does not exist is
    /// left out here; validation reports it).
    let combinations (e: Experiment) : Run list =
        let runs = expand e
        [ for c in e.Combinations do
              let sources = c.Adapters |> List.choose (fun (name, _) -> runs |> List.tryFind (fun r -> r.Name = name))
              match sources with
              | first :: _ when sources.Length = c.Adapters.Length ->
                  yield { first with Kind = Combining { Combination = c; Sources = sources }; Name = c.Name; Rank = None }
              | _ -> () ]

    /// The pretrain steps an experiment's models need (distinct, in order).
    let pretrains (e: Experiment) =
        e.Models |> List.choose (function FromPretrain p -> Some p | _ -> None) |> List.distinct
