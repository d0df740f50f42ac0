module Lora.Tests.DslTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open Lora.Dsl
open Lora.CommandLine
open Lora.Tests.Generators

/// The same experiment, built through the computation expression.
let rebuild (e: Experiment) =
    experiment {
        name e.Name
        models e.Models
        datasets e.Datasets
        task e.Task
        methods e.Methods
        ranks e.Ranks
        seeds e.Seeds
        epochs e.Training.Epochs
        batch e.Training.Batch
        lr e.Training.Lr
        warmup e.Training.Warmup
        weightDecay e.Training.WeightDecay
        device e.Training.Device
        precision e.Training.Precision
        imageSize e.Training.ImageSize.Value
        tables e.Tables
        settings (Settings.ofTraining e.Training)
        variants e.Variants
    }
    |> fun built -> { built with Sweeps = e.Sweeps }

let parseOk (text: string) =
    let es, errs, _ = YamlSpec.parse "gen.yaml" text
    if not (List.isEmpty errs) then failwithf "parse errors:\n%s\n---\n%s" (errs |> List.map string |> String.concat "\n") text
    es

/// Shuffles the keys of every mapping (and nothing else) of a YAML text.
let shuffleKeys (seed: int) (text: string) =
    let rng = Random seed
    let rec shuffle (n: YamlDotNet.RepresentationModel.YamlNode) : YamlDotNet.RepresentationModel.YamlNode =
        match n with
        | :? YamlDotNet.RepresentationModel.YamlMappingNode as m ->
            let pairs = m.Children |> Seq.map (fun kv -> kv.Key, shuffle kv.Value) |> Seq.sortBy (fun _ -> rng.Next()) |> List.ofSeq
            let out = YamlDotNet.RepresentationModel.YamlMappingNode()
            for k, v in pairs do out.Add(k, v)
            out
        | :? YamlDotNet.RepresentationModel.YamlSequenceNode as s ->
            YamlDotNet.RepresentationModel.YamlSequenceNode(s.Children |> Seq.map shuffle)
        | n -> n
    let stream = YamlDotNet.RepresentationModel.YamlStream()
    stream.Load(new StringReader(text))
    let doc = YamlDotNet.RepresentationModel.YamlDocument(shuffle stream.Documents.[0].RootNode)
    use w = new StringWriter()
    YamlDotNet.RepresentationModel.YamlStream(doc).Save(w, false)
    w.ToString()

let hashes (es: Experiment list) = Spec.runs es |> List.map Canonical.hash

/// Every way to change one field of a run; each must change its hash.
let mutations: (string * (Run -> Run)) list =
    [ "epochs", fun r -> { r with Training = { r.Training with Epochs = r.Training.Epochs + 1 } }
      "batch", fun r -> { r with Training = { r.Training with Batch = r.Training.Batch + 1 } }
      "lr", fun r -> { r with Training = { r.Training with Lr = r.Training.Lr * 2.0 } }
      "warmup", fun r -> { r with Training = { r.Training with Warmup = r.Training.Warmup + 1 } }
      "weight decay", fun r -> { r with Training = { r.Training with WeightDecay = r.Training.WeightDecay + 0.5 } }
      "device", fun r -> { r with Training = { r.Training with Device = (if r.Training.Device = Cpu then Cuda else Cpu) } }
      "precision", fun r -> { r with Training = { r.Training with Precision = (if r.Training.Precision = Fp32 then Bf16 else Fp32) } }
      "image size", fun r -> { r with Training = { r.Training with ImageSize = Some 999 } }
      "seed", fun r -> { r with Seed = r.Seed + 100 }
      "name", fun r -> { r with Name = r.Name + "x" }
      "experiment", fun r -> { r with Experiment = r.Experiment + "x" }
      "task", fun r -> { r with Task = (if r.Task = Classification then Segmentation else Classification) }
      "rank", fun r -> { r with Rank = Some((Rank.Create(r.RankValue + 1) |> Result.toOption).Value) }
      "method", fun r -> { r with Method = (match r.Method with Full -> Head | _ -> Full) }
      "dataset seed", fun r -> { r with Dataset = { r.Dataset with Seed = r.Dataset.Seed + 1 } }
      "dataset limit", fun r -> { r with Dataset = { r.Dataset with LimitTrain = Some 123457 } }
      "dataset classes", fun r -> { r with Dataset = { r.Dataset with Classes = Some [ 42 ] } }
      "val fraction", fun r -> { r with Dataset = { r.Dataset with ValFraction = r.Dataset.ValFraction + 0.001 } }
      "model option", fun r -> { r with Model = Zoo { r.Model.ZooModel with Options = r.Model.ZooModel.Options.Add("new_opt", Int 1) } }
      "lora dropout", fun r ->
          match r.Method with
          | Lora o -> { r with Method = Lora { o with Dropout = o.Dropout + 0.01 } }
          | _ -> { r with Method = Lora LoraOptions.Defaults } ]

let propertyTests =
    testList "properties" [
        testProp "generated experiment → YAML → parsed equals the CE-built records" (Prop.forAll DslGenerators.experimentArb (fun e ->
            let built = rebuild e
            Expect.equal built e "the builder gives the record"
            let back = parseOk (YamlSpec.write [ built ])
            Expect.equal back [ built ] "YAML round trip"
            Expect.equal (Spec.runs back) (Spec.runs [ built ]) "same runs"))

        testProp "grid size is the product of its axes" (Prop.forAll DslGenerators.experimentArb (fun e ->
            let runs = Grid.expand e
            let cells (v: Variant) =
                let axes = Settings.merge e.Sweeps v.Training |> List.fold (fun n a -> n * a.Length) 1
                axes * (v.Choices |> List.sumBy (fun (_, m) -> if m.UsesRank then e.Ranks.Length else 1))
            let rankCells = Grid.entries e |> List.sumBy cells
            Expect.equal runs.Length (e.Models.Length * e.Datasets.Length * e.Seeds.Length * rankCells) "runs = models × datasets × seeds × Σ method ranks × training axes"
            Expect.equal (runs |> List.map (fun r -> r.Name) |> List.distinct).Length runs.Length "run names are unique"
            Expect.isTrue (runs |> List.forall (fun r -> r.Method.UsesRank = r.Rank.IsSome)) "full/head (and ratio adapters) carry no rank"))

        testProp "plan hashes do not depend on YAML key order" (Prop.forAll (Arb.fromGen (Gen.zip (DslGenerators.experimentArb.Generator) (Gen.choose (0, 1000)))) (fun (e, seed) ->
            let text = YamlSpec.write [ e ]
            let shuffled = shuffleKeys seed text
            Expect.equal (hashes (parseOk shuffled)) (hashes (parseOk text)) "same hashes after reordering keys"))

        testProp "changing any field changes the hash" (Prop.forAll DslGenerators.experimentArb (fun e ->
            for r in Grid.expand e |> List.truncate 3 do
                let h = Canonical.hash r
                for name, change in mutations do
                    Expect.notEqual (Canonical.hash (change r)) h (sprintf "changing %s changes the hash" name)))
    ]

let unitTests =
    testList "records" [
        test "Rank.Create rejects zero and negatives" {
            Expect.isError (Rank.Create 0) "0"
            Expect.isError (Rank.Create -3) "-3"
            Expect.equal (Rank.Create 8 |> Result.map (fun r -> r.Value)) (Ok 8) "8"
        }
        test "alpha defaults to 2 × rank, AdaLoRA init_r to ⌈1.5 × rank⌉" {
            let e = experiment { name "t"; model (zoo "vit_tiny_patch16_224" []); dataset fashionMnist; methods [ lora; adalora ]; ranks [ 4; 5 ] }
            let runs = Grid.expand e
            let alphas = runs |> List.map (fun r -> match r.Method with Lora o | Dora o | AdaLora(o, _) -> o.Alpha | _ -> None)
            Expect.equal alphas [ Some 8.0; Some 10.0; Some 8.0; Some 10.0 ] "alpha"
            let inits = runs |> List.choose (fun r -> match r.Method with AdaLora(_, a) -> a.InitRank | _ -> None)
            Expect.equal inits [ 6; 8 ] "init_r"
            Expect.equal (runs |> List.map (fun r -> r.Name)) [ "lora-r4"; "lora-r5"; "adalora-r4"; "adalora-r5" ] "names"
        }
        test "full and head are not multiplied by ranks; seeds and datasets name the runs" {
            let e =
                experiment {
                    name "t"
                    model (zoo "vit" [])
                    datasets [ fashionMnist; cifar "data/c10" ]
                    methods [ full; head; lora ]
                    ranks [ 2; 4 ]
                    seeds [ 0; 1 ]
                }
            let names = Grid.expand e |> List.map (fun r -> r.Name)
            Expect.equal names.Length (2 * 2 * (1 + 1 + 2)) "16 runs"
            Expect.contains names "full-fashion_mnist-s0" "full"
            Expect.contains names "lora-r4-cifar-c10-s1" "lora"
        }
        test "a pretrain base becomes a dependency with its own run" {
            let p = pretrain { name "p"; model (zoo "vit" [ "depth", Int 2 ]); dataset (fashionMnist |> classes [ 0; 1 ]) }
            let e = experiment { name "t"; model (fromPretrain p); dataset fashionMnist; methods [ head ] }
            let runs = Spec.runs [ e; { e with Name = "u" } ]
            Expect.equal (runs |> List.map (fun r -> r.Id)) [ "pretrain/p"; "t/head"; "u/head" ] "one pretrain, shared"
            let pre = Canonical.hash runs.Head
            Expect.equal (Canonical.dependsOn runs.[1]) pre "tune depends on the pretrain's hash"
            Expect.isNull (Canonical.dependsOn runs.Head) "the pretrain depends on nothing"
        }
        test "canonical JSON sorts keys and keeps floats exact" {
            let j = Json.write (JObject [ "b", JFloat 0.1; "a", JInt 3L; "c", JFloat 2.0; "d", JString "q\"\n" ])
            Expect.equal j "{\"a\":3,\"b\":0.1,\"c\":2.0,\"d\":\"q\\\"\\n\"}" "canonical text"
        }
        test "the builder rejects a zero rank with the field" {
            let errs =
                try
                    experiment { name "t"; model (zoo "vit" []); dataset fashionMnist; methods [ lora ]; ranks [ 0 ] } |> ignore
                    []
                with SpecException errs -> errs
            Expect.equal (errs |> List.map (fun e -> e.Field, e.Message)) [ "t.ranks[0]", "rank must be a positive integer, got 0" ] "error"
        }
        test "pretrain rejects a non-zoo model" {
            // a located spec error (the model operation's line), as every builder error
            let line = int __LINE__ + 1
            match (try pretrain { name "p"; model (weights "vit" [] "w.safetensors") } |> ignore; [] with SpecException errs -> errs) with
            | [ e ] -> Expect.equal (e.Line, e.Field) (line, "pretrain.model") "weights, at its line"
            | other -> failtestf "expected one error, got %A" other
        }
        test "zoo name suggestions" {
            Expect.equal (ZooNames.suggest ZooNames.all "vit_tiny_patch16") [ "vit_tiny_patch16_224" ] "typo"
            Expect.contains (ZooNames.suggest ZooNames.all "convnext_tin") "convnext_tiny" "prefix"
        }
    ]

// ------------------------------------------------------------------ validation: every error path

let baseSpec =
    """experiments:
  - name: t
    model: vit_tiny_patch16_224
    dataset: { source: fashion_mnist }
    methods: [lora]
    ranks: [4]
"""

/// Paths containing "missing" do not exist; everything else does (tests must not depend on the disk).
let fakeExists (p: string) = not (p.Contains "missing")

let errorsOf (ext: string) (exists: string -> bool) (text: string) =
    use dir = new TempDir()
    let path = dir.File("spec" + ext)
    File.WriteAllText(path, text)
    match Spec.loadWith exists path with
    | Ok _ -> []
    | Error errs -> errs |> List.map (fun e -> { e with File = Path.GetFileName e.File })

/// 1-based line and column of the first occurrence of `needle` (plus `offset` characters).
let locate (text: string) (needle: string) (offset: int) =
    let i = text.IndexOf needle + offset
    if i < offset then failwithf "needle '%s' not in the spec" needle
    let before = text.Substring(0, i)
    let line = before |> Seq.filter ((=) '\n') |> Seq.length
    line + 1, i - (before.LastIndexOf '\n')

/// A named pretrain step with one more dataset field; stepP is a valid one named p.
let stepWith (name: string) (datasetField: string) =
    sprintf "  - name: %s\n    model: { zoo: vit, options: { img_size: 28, patch_size: 4, in_chans: 1, num_classes: 5 } }\n    dataset: { source: fashion_mnist, %s }\n" name datasetField
let stepP = stepWith "p" "limit_train: 100"

/// baseSpec with pretrain steps declared on top and its model taken from the step `uses`.
let withSteps (steps: string list) (uses: string) =
    "pretrain:\n" + String.concat "" steps + baseSpec.Replace("model: vit_tiny_patch16_224", sprintf "model: { pretrain: %s }" uses)

/// (case, spec text, field, needle, offset, message part)
let errorCases =
    let r (a: string) (b: string) = baseSpec.Replace(a, b)
    let dataset (mapping: string) = r "{ source: fashion_mnist }" mapping   // baseSpec with another dataset
    [ "unknown model with suggestions", r "model: vit_tiny_patch16_224" "model: vit_tiny_patch16", "experiments[0].models[0].zoo", "vit_tiny_patch16\n", 0,
      "unknown model 'vit_tiny_patch16' (did you mean vit_tiny_patch16_224?)"
      "rank zero", r "ranks: [4]" "ranks: [4, 0]", "experiments[0].ranks[1]", "0]", 0, "rank must be a positive integer, got 0"
      "negative rank", r "ranks: [4]" "ranks: [-2]", "experiments[0].ranks[0]", "-2", 0, "rank must be a positive integer, got -2"
      "option of another method", r "methods: [lora]" "methods: [{lora: {ratio: 0.5}}]", "experiments[0].methods[0].ratio", "ratio", 0,
      "'ratio' does not apply to lora (it is an option of adapter)"
      "options on full", r "methods: [lora]" "methods: [{full: {alpha: 2}}]", "experiments[0].methods[0].alpha", "alpha", 0,
      "full takes no options ('alpha' is an option of lora, dora, adalora, loha, lokr)"
      "unknown field", baseSpec + "    epoch: 3\n", "experiments[0].epoch", "epoch:", 0, "unknown field 'epoch' (did you mean epochs?)"
      "dataset path that does not exist", dataset "{ source: cifar, path: missing/cifar }", "experiments[0].datasets[0].path",
      "missing/cifar", 0, "CIFAR data set not found at 'missing/cifar'"
      "wrong type", baseSpec + "    epochs: three\n", "experiments[0].epochs", "three", 0, "expected an integer, got 'three'"
      "wrong type: list expected", r "ranks: [4]" "ranks: 4", "experiments[0].ranks", "ranks: 4", 7, "expected a list, got '4'"
      "unknown method", r "methods: [lora]" "methods: [lorra]", "experiments[0].methods[0]", "lorra", 0, "unknown method 'lorra' (did you mean lora?)"
      "unknown pretrain step", r "model: vit_tiny_patch16_224" "model: { pretrain: vit-x }", "experiments[0].models[0].pretrain", "vit-x", 0,
      "no pretrain step named 'vit-x'"
      "AdaLoRA init rank below the rank", r "methods: [lora]" "methods: [{adalora: {init_rank: 3}}]", "experiments[0].methods[0].init_rank", "3}", 0,
      "init_rank 3 is below the target rank 4"
      "a method that needs ranks", r "    ranks: [4]\n" "", "experiments[0].methods[0]", "lora", 0, "lora needs ranks"
      "segmentation task on classification data", baseSpec + "    task: segmentation\n", "experiments[0].datasets[0].source", "fashion_mnist", 0,
      "a segmentation task needs segmentation data"
      "composed-only field on another source", dataset "{ source: cifar, path: data, canvas: 64 }", "experiments[0].datasets[0].canvas",
      "64", 0, "'canvas' does not apply to cifar"
      "weights file that does not exist", r "model: vit_tiny_patch16_224" "model: { zoo: vit_tiny_patch16_224, weights: missing.safetensors }",
      "experiments[0].models[0].weights", "missing.safetensors", 0, "weights file not found at 'missing.safetensors'"
      "unknown device", baseSpec + "    device: gpu\n", "experiments[0].device", "gpu", 0, "unknown value 'gpu' (did you mean cpu?); expected one of cpu, cuda"
      "no dataset", r "    dataset: { source: fashion_mnist }\n" "", "experiments[0].datasets", "name: t", 0, "an experiment needs dataset"
      "epochs zero", baseSpec + "    epochs: 0\n", "experiments[0].epochs", "epochs: 0", 8, "epochs must be at least 1, got 0"
      "fp16 refused before any run", baseSpec + "    precision: fp16\n", "experiments[0].precision", "precision: fp16", 11,
      "precision fp16 is not supported (no autocast or loss scaling in TorchSharp): use bf16 (fp32 master weights) or fp32"
      "empty class list", dataset "{ source: fashion_mnist, classes: [] }", "experiments[0].datasets[0].classes", "[]", 0,
      "classes is empty"
      "a method listed twice", r "methods: [lora]" "methods: [lora, lora]", "experiments[0].methods", "[lora, lora]", 0,
      "two runs would be named 'lora-r4'"
      "model option that must be positive", r "model: vit_tiny_patch16_224" "model: { zoo: vit, options: { img_size: 0 } }",
      "experiments[0].models[0].options.img_size", "0 }", 0, "img_size must be positive, got 0"
      "unknown top-level key", baseSpec.Replace("experiments:", "experiment:"), "experiment", "experiment:", 0,
      "unknown field 'experiment' (did you mean experiments?)"
      "a dataset without a source", dataset "{ path: data }", "experiments[0].datasets[0].source", "{ path", 0,
      "a dataset needs a source"
      "lr not a number", baseSpec + "    lr: fast\n", "experiments[0].lr", "fast", 0, "expected a number, got 'fast'"
      "a pretrain step with weights", "pretrain:\n  - name: p\n    model: { zoo: vit, weights: w.safetensors }\n    dataset: { source: fashion_mnist }\n"
                                      + baseSpec.Replace("model: vit_tiny_patch16_224", "model: { pretrain: p }"),
      "pretrain[0].model.weights", "weights", 0, "a pretrain step trains a zoo model from scratch: 'weights' does not apply"
      "empty name", r "name: t" "name: \"\"", "experiments[0].name", "\"\"", 0, "an experiment needs a name"
      "name with a slash", r "name: t" "name: a/b", "experiments[0].name", "a/b", 0, "name 'a/b' must not contain"
      "two experiments with one name", baseSpec + baseSpec.Substring(baseSpec.IndexOf "  - name"), "experiments", "  - name", 2,
      "two experiments are named 't'"
      "shots zero", dataset "{ source: fashion_mnist, shots: 0 }", "experiments[0].datasets[0].shots", "0 }", 0, "shots must be positive, got 0"
      "limit_train zero", dataset "{ source: fashion_mnist, limit_train: 0 }", "experiments[0].datasets[0].limit_train", "0 }", 0,
      "limit_train must be positive, got 0"
      "limit_val negative", dataset "{ source: fashion_mnist, limit_val: -1 }", "experiments[0].datasets[0].limit_val", "-1", 0,
      "limit_val must be positive, got -1"
      "val_fraction out of range", dataset "{ source: fashion_mnist, val_fraction: 1.5 }", "experiments[0].datasets[0].val_fraction",
      "1.5", 0, "val_fraction must be in [0, 1), got 1.5"
      "duplicate classes", dataset "{ source: fashion_mnist, classes: [1, 1] }", "experiments[0].datasets[0].classes[1]", "1]", 0,
      "class 1 is listed twice (also classes[0]): list each class once"
      "negative class", dataset "{ source: fashion_mnist, classes: [-1, 2] }", "experiments[0].datasets[0].classes[0]", "-1", 0,
      "class -1 is outside Fashion-MNIST's 10 classes: use 0-9"
      "class beyond Fashion-MNIST", dataset "{ source: fashion_mnist, classes: [0, 12] }", "experiments[0].datasets[0].classes[1]",
      "12", 0, "class 12 is outside Fashion-MNIST's 10 classes: use 0-9"
      "class beyond CIFAR-100 (train.bin found)", dataset "{ source: cifar, path: data, classes: [5, 100] }",
      "experiments[0].datasets[0].classes[1]", "100", 0, "class 100 is outside CIFAR-100's 100 classes: use 0-99"
      "negative class of an image folder", dataset "{ source: image_folder, path: data, classes: [0, -3] }",
      "experiments[0].datasets[0].classes[1]", "-3", 0, "class -3 is negative: classes are numbered from 0"
      "class beyond the composed objects", dataset "{ source: composed_segmentation, canvas: 64, objects: 1, classes: [10] }" + "    task: segmentation\n",
      "experiments[0].datasets[0].classes[0]", "10]", 0, "class 10 is outside Fashion-MNIST's 10 classes: use 0-9"
      "classes on segmentation pairs", dataset "{ source: segmentation_pairs, path: data, classes: [1] }" + "    task: segmentation\n",
      "experiments[0].datasets[0].classes", "[1]", 0, "classes does not apply to segmentation_pairs (the masks define the classes): remove it"
      "shots on segmentation pairs", dataset "{ source: segmentation_pairs, path: data, shots: 5 }" + "    task: segmentation\n",
      "experiments[0].datasets[0].shots", "5 }", 0, "shots does not apply to segmentation_pairs"
      "negative shots", dataset "{ source: fashion_mnist, shots: -2 }", "experiments[0].datasets[0].shots", "-2", 0,
      "shots must be positive, got -2"
      "class beyond the data set in a named pretrain step", withSteps [ stepP; stepWith "q" "classes: [0, 10]" ] "q",
      "experiments[0].models[0].pretrain.dataset.classes[1]", "10]", 0, "class 10 is outside Fashion-MNIST's 10 classes: use 0-9"
      "an unused pretrain step is checked like a used one: bad class", withSteps [ stepP; stepWith "q" "classes: [12]" ] "p",
      "pretrain[1].dataset.classes[0]", "12]", 0, "class 12 is outside Fashion-MNIST's 10 classes: use 0-9"
      "an unused pretrain step is checked like a used one: epochs", withSteps [ stepP; stepP.Replace("name: p", "name: q") + "    epochs: 0\n" ] "p",
      "pretrain[1].epochs", "epochs: 0", 8, "epochs must be at least 1, got 0"
      "an unused pretrain step is checked like a used one: unknown model", withSteps [ stepP; stepP.Replace("name: p", "name: q").Replace("zoo: vit", "zoo: vitt") ] "p",
      "pretrain[1].model.zoo", "vitt", 0, "unknown model 'vitt'"
      "an unused pretrain step is checked like a used one: missing data", withSteps [ stepP; stepWith "q" "path: missing/fm" ] "p",
      "pretrain[1].dataset.path", "missing/fm", 0, "Fashion-MNIST data set not found at 'missing/fm'"
      "classification on masks", dataset "{ source: segmentation_pairs, path: data }", "experiments[0].datasets[0].source",
      "segmentation_pairs", 0, "a classification task needs labelled images"
      "composed canvas too small", dataset "{ source: composed_segmentation, canvas: 10, objects: 1 }" + "    task: segmentation\n",
      "experiments[0].datasets[0].canvas", "10", 0, "canvas must be at least 28 pixels"
      "composed without objects", dataset "{ source: composed_segmentation, canvas: 64, objects: 0 }" + "    task: segmentation\n",
      "experiments[0].datasets[0].objects", "0 }", 0, "objects must be at least 1, got 0"
      "composed canvas missing", dataset "{ source: composed_segmentation, objects: 1 }", "experiments[0].datasets[0].canvas",
      "{ source", 0, "composed_segmentation needs canvas"
      "image folder without a path", dataset "{ source: image_folder }", "experiments[0].datasets[0].path", "{ source", 0,
      "image_folder needs a path"
      "segmentation pairs not found", dataset "{ source: segmentation_pairs, path: missing/pairs }" + "    task: segmentation\n",
      "experiments[0].datasets[0].path", "missing/pairs", 0, "segmentation pairs data set not found at 'missing/pairs'"
      "batch zero", baseSpec + "    batch: 0\n", "experiments[0].batch", "batch: 0", 7, "batch must be at least 1, got 0"
      "lr negative", baseSpec + "    lr: -0.1\n", "experiments[0].lr", "-0.1", 0, "lr must be positive, got -0.1"
      "warmup negative", baseSpec + "    warmup: -1\n", "experiments[0].warmup", "-1", 0, "warmup must not be negative, got -1"
      "weight decay negative", baseSpec + "    weight_decay: -1.0\n", "experiments[0].weight_decay", "-1.0", 0, "weight_decay must not be negative"
      "image size zero", baseSpec + "    image_size: 0\n", "experiments[0].image_size", "image_size: 0", 12, "image_size must be positive, got 0"
      "pretrain without a name", r "model: vit_tiny_patch16_224" "model: { pretrain: { model: vit, dataset: { source: fashion_mnist } } }",
      "experiments[0].models[0].pretrain.name", "{ model", 0, "a pretrain step needs a name"
      "pretrain without a model", r "model: vit_tiny_patch16_224" "model: { pretrain: { name: p, dataset: { source: fashion_mnist } } }",
      "experiments[0].models[0].pretrain.model", "{ name: p", 0, "a pretrain step needs a model"
      "weights that are not safetensors", r "model: vit_tiny_patch16_224" "model: { zoo: vit, weights: w.bin }", "experiments[0].models[0].weights",
      "w.bin", 0, "weights must be a .safetensors file, got 'w.bin'"
      "alpha zero", r "methods: [lora]" "methods: [{lora: {alpha: 0}}]", "experiments[0].methods[0].alpha", "0}", 0, "alpha must be positive, got 0"
      "dropout one", r "methods: [lora]" "methods: [{dora: {dropout: 1}}]", "experiments[0].methods[0].dropout", "1}", 0, "dropout must be in [0, 1), got 1"
      "no targets", r "methods: [lora]" "methods: [{lora: {targets: []}}]", "experiments[0].methods[0].targets", "[]}", 0, "targets is empty"
      "delta_t zero", r "methods: [lora]" "methods: [{adalora: {delta_t: 0}}]", "experiments[0].methods[0].delta_t", "0}", 0, "delta_t must be at least 1, got 0"
      "tinit negative", r "methods: [lora]" "methods: [{adalora: {tinit: -1}}]", "experiments[0].methods[0].tinit", "-1", 0, "tinit must not be negative"
      "tfinal negative", r "methods: [lora]" "methods: [{adalora: {tfinal: -1}}]", "experiments[0].methods[0].tfinal", "-1", 0, "tfinal must not be negative"
      "beta1 one", r "methods: [lora]" "methods: [{adalora: {beta1: 1.0}}]", "experiments[0].methods[0].beta1", "1.0", 0, "beta1 must be in [0, 1), got 1"
      "orth_reg negative", r "methods: [lora]" "methods: [{adalora: {orth_reg: -1}}]", "experiments[0].methods[0].orth_reg", "-1", 0, "orth_reg must be positive"
      "orth_reg zero (PEFT and the core refuse it)", r "methods: [lora]" "methods: [{adalora: {orth_reg: 0}}]", "experiments[0].methods[0].orth_reg", "0}", 0, "orth_reg must be positive"
      "adapter ratio zero", r "methods: [lora]" "methods: [{adapter: {ratio: 0}}]", "experiments[0].methods[0].ratio", "0}", 0, "ratio must be positive, got 0"
      "adapter scale zero", r "methods: [lora]" "methods: [{adapter: {scale: 0}}]", "experiments[0].methods[0].scale", "0}", 0, "scale must be positive, got 0"
      "duplicate ranks", r "ranks: [4]" "ranks: [4, 4]", "experiments[0].ranks", "[4, 4]", 0, "ranks has duplicates"
      "no seeds", baseSpec + "    seeds: []\n", "experiments[0].seeds", "[]", 0, "seeds is empty"
      "duplicate seeds", baseSpec + "    seeds: [1, 1]\n", "experiments[0].seeds", "[1, 1]", 0, "seeds has duplicates"
      "seed and seeds", baseSpec + "    seed: 1\n    seeds: [1]\n", "experiments[0].seeds", "[1]\n", 0, "give either seed or seeds, not both"
      "model and models", baseSpec + "    models: [vit]\n", "experiments[0].models", "[vit]", 0, "give either model or models, not both"
      "zoo and pretrain in one model", r "model: vit_tiny_patch16_224" "model: { zoo: vit, pretrain: p }", "experiments[0].models[0]", "{ zoo", 0,
      "a model is either zoo: NAME (with options, weights) or pretrain: STEP, not both"
      "a model without zoo", r "model: vit_tiny_patch16_224" "model: { options: { a: 1 } }", "experiments[0].models[0]", "{ options", 0,
      "a model needs zoo: NAME"
      "a dataset that is not a mapping", dataset "fashion_mnist", "experiments[0].datasets[0]", "fashion_mnist", 0,
      "expected a mapping with fields"
      "a model option that is a list", r "model: vit_tiny_patch16_224" "model: { zoo: vit, options: { a: [1] } }", "experiments[0].models[0].options.a",
      "[1]", 0, "a model option must be a number, true/false or a string"
      "a method with two names", r "methods: [lora]" "methods: [{lora: {}, dora: {}}]", "experiments[0].methods[0]", "{lora", 0,
      "a method is a name (lora) or a name with options"
      "unknown bias", r "methods: [lora]" "methods: [{lora: {bias: some}}]", "experiments[0].methods[0].bias", "some", 0,
      "unknown value 'some' (did you mean none?); expected one of none, lora_only, all"
      "rslora not a boolean", r "methods: [lora]" "methods: [{lora: {rslora: yes}}]", "experiments[0].methods[0].rslora", "yes", 0,
      "expected true or false, got 'yes'"
      "unknown task", baseSpec + "    task: detection\n", "experiments[0].task", "detection", 0, "unknown value 'detection'"
      "experiments not a list", "experiments: 3\n", "experiments", "3", 0, "expected a list of experiments, got '3'"
      "two pretrain steps with one name",
      baseSpec.Replace("model: vit_tiny_patch16_224", "model: { pretrain: { name: p, model: vit, dataset: { source: fashion_mnist } } }")
      + baseSpec.Substring(baseSpec.IndexOf "  - name").Replace("name: t", "name: u").Replace("model: vit_tiny_patch16_224", "model: { pretrain: { name: p, model: vit, dataset: { source: fashion_mnist }, epochs: 3 } }"),
      "experiments", "  - name", 2, "two different pretrain steps are named 'p'" ]

let validationTests =
    testList "validation" [
        for case, text, field, needle, offset, message in errorCases do
            test case {
                let errs = errorsOf ".yaml" fakeExists text
                let line, col = locate text needle offset
                match errs |> List.tryFind (fun e -> e.Field = field) with
                | Some e ->
                    Expect.stringContains e.Message message "message"
                    Expect.equal (e.Line, e.Column) (line, col) (sprintf "location of %s" field)
                    Expect.stringStarts (string e) (sprintf "spec.yaml:%d:%d: %s: " line col field) "printed as file:line:col: field: message"
                | None -> failtestf "no error for %s; got:\n%s" field (errs |> List.map string |> String.concat "\n")
            }
        test "not valid YAML reports where" {
            let errs = errorsOf ".yaml" fakeExists (baseSpec.Replace("ranks: [4]", "ranks: [4, 8"))
            Expect.equal errs.Length 1 "one error"
            Expect.equal errs.Head.Field "yaml" "field"
            Expect.stringContains errs.Head.Message "not valid YAML" "message"
            Expect.isGreaterThan errs.Head.Line 5 "line"
        }
        test "Fashion-MNIST not installed says how to install it" {
            let errs = errorsOf ".yaml" (fun _ -> false) baseSpec
            Expect.equal (errs |> List.map (fun e -> e.Field, e.Line, e.Column)) [ "experiments[0].datasets[0].path", 4, 14 ] "located at the dataset"
            Expect.stringContains errs.Head.Message "apt-get install dataset-fashion-mnist" "fix"
        }
        test "every problem is reported, each on its own line, exit code 2" {
            let text =
                baseSpec.Replace("vit_tiny_patch16_224", "vit_tiny").Replace("ranks: [4]", "ranks: [0]") + "    epochs: x\n    batchsize: 3\n"
            let errs = errorsOf ".yaml" fakeExists text
            Expect.equal (errs |> List.map (fun e -> e.Field))
                [ "experiments[0].models[0].zoo"; "experiments[0].ranks[0]"; "experiments[0].epochs"; "experiments[0].batchsize" ] "all four, in file order"
            use dir = new TempDir()
            let path = dir.File "bad.yaml"
            File.WriteAllText(path, text)
            use out = new StringWriter()
            use err = new StringWriter()
            let code = Lora.Runner.Commands.Validate(path, out, err)
            Expect.equal code 2 "exit code"
            let lines = err.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 4 "one line per error"
            for l in lines do Expect.stringContains l "bad.yaml:" "each line names the file and position"
        }
        test "an empty spec" {
            let errs = errorsOf ".yaml" fakeExists ""
            Expect.equal (errs |> List.map (fun e -> e.Field, e.Message)) [ "experiments", "the spec is empty: it needs experiments: [...]" ] "message"
        }
        test "unknown spec extension" {
            let errs = errorsOf ".json" fakeExists "{}"
            Expect.stringContains errs.Head.Message "unknown spec type '.json'" "message"
        }
        test "a spec file that does not exist" {
            match Spec.load "nowhere/spec.yaml" with
            | Error [ e ] -> Expect.equal e.Message "spec file not found" "message"
            | other -> failtestf "expected one error, got %A" other
        }
    ]

// ------------------------------------------------------------------ spec files

let quickstart ext = Path.Combine(repoRoot, "experiments", "quickstart" + ext)

let specTests =
    testList "spec files" [
        test "quickstart.yaml and quickstart.fsx give the same records and hashes" {
            let yaml = match Spec.loadWith (fun _ -> true) (quickstart ".yaml") with Ok es -> es | Error e -> failtestf "%A" e
            let fsx = match Spec.loadWith (fun _ -> true) (quickstart ".fsx") with Ok es -> es | Error e -> failtestf "%A" e
            Expect.equal fsx yaml "same records"
            Expect.equal (hashes fsx) (hashes yaml) "same hashes"
            let runs = Spec.runs yaml
            Expect.equal runs.Length 31 "pretrain + 3 seeds × (full + head + 4 methods × 2 ranks)"
            Expect.equal (runs |> List.map (fun r -> r.Method.Name) |> List.distinct) [ "full"; "head"; "lora"; "dora"; "adalora"; "adapter" ] "all methods"
            // an F# spec with an error reports where it is
            use dir = new TempDir()
            let bad = dir.File "bad.fsx"
            File.WriteAllText(bad, "let experiments =\n    [ experiment { name \"t\"; model (zoo \"vit\" []); dataset fashionMnist; methods [ lora ]; ranks [ 0 ] } ]\n")
            match Spec.loadWith (fun _ -> true) bad with
            | Error [ e ] -> Expect.equal (e.Field, e.Line, e.Message) ("experiments[0].ranks[0]", 2, "rank must be a positive integer, got 0") "builder error, at its line"
            | other -> failtestf "expected the builder's error, got %A" other
            File.WriteAllText(bad, "let experimentz = []\n")
            match Spec.loadWith (fun _ -> true) bad with
            | Error [ e ] -> Expect.stringContains e.Message "the script must bind `experiments`" "no binding"
            | other -> failtestf "expected a missing binding, got %A" other
            File.WriteAllText(bad, "let experiments = 42\n")
            match Spec.loadWith (fun _ -> true) bad with
            | Error [ e ] -> Expect.equal e.Message "`experiments` must be an experiment or a list of experiments, got Int32" "wrong type"
            | other -> failtestf "expected a wrong type, got %A" other
            File.WriteAllText(bad, "let experiments = [ experiment { name \"t\"; nosuchop 3 } ]\n")
            match Spec.loadWith (fun _ -> true) bad with
            | Error(e :: _) -> Expect.equal (e.Line, e.Field) (1, "script") "compile error with its line"
            | other -> failtestf "expected a compile error, got %A" other
        }
        test "YAML: named and inline pretrain steps are the same record" {
            let named = parseOk (File.ReadAllText(quickstart ".yaml"))
            let inline' = parseOk (YamlSpec.write named)
            Expect.equal inline' named "written inline, read back equal"
        }
    ]

// ------------------------------------------------------------------ command line

let cliTests =
    testList "command line" [
        test "run with every option" {
            let o = CommandLine.Parse [| "run"; "spec.yaml"; "--results"; "r"; "--device"; "cuda"; "--only"; "q/lora-*"; "--shard"; "1/4"; "--force"; "--write-tables"; "pt" |]
            Expect.equal o.ExitCode 0 "parsed"
            Expect.equal o.Command.Command (Command.Run { Specs = [ "spec.yaml" ]; Results = "r"; Device = "cuda"; Only = "q/lora-*"; ShardIndex = 1; ShardCount = 4; Force = true; Tables = "pt"; Verify = false }) "options"
            Expect.equal o.Command.CommandLine "lora run spec.yaml --results r --device cuda --only 'q/lora-*' --shard 1/4 --force --write-tables pt" "command line quoted back"
        }
        test "defaults" {
            let o = CommandLine.Parse [| "run"; "s.yaml" |]
            Expect.equal o.Command.Command (Command.Run { Specs = [ "s.yaml" ]; Results = "results"; Device = null; Only = null; ShardIndex = 0; ShardCount = 1; Force = false; Tables = null; Verify = false }) "defaults"
            let t = CommandLine.Parse [| "tables" |]
            Expect.equal t.Command.Command (Command.Tables { Results = "results"; Out = "paper-tables"; Specs = [] }) "tables defaults"
        }
        test "errors exit 2 with usage" {
            for args in [ [| "run" |]; [| "run"; "s.yaml"; "--shard"; "4/4" |]; [| "run"; "s.yaml"; "--device"; "tpu" |]; [| "fly" |]; [| "plan"; "s.yaml"; "--bogus" |] ] do
                let o = CommandLine.Parse args
                Expect.equal o.ExitCode 2 (String.Join(" ", args))
                Expect.isNull o.Command "no command"
                Expect.isNonEmpty o.Message "a message"
        }
        test "every subcommand parses" {
            let cases =
                [ [| "validate"; "s.yaml" |], "Validate"
                  [| "plan"; "s.yaml"; "--json" |], "Plan"
                  [| "summary"; "convnext_tiny"; "--method"; "lora"; "--rank"; "2"; "--targets"; "qkv"; "fc1"; "--bias"; "lora_only"; "--classes"; "10" |], "Summary"
                  [| "merge"; "--model"; "vit"; "--weights"; "w.safetensors"; "--adapter"; "a"; "--out"; "m.safetensors" |], "Merge"
                  [| "predict"; "--model"; "vit"; "--top-k"; "3"; "--json"; "a.png"; "b.png" |], "Predict"
                  [| "bench"; "--model"; "vit"; "--methods"; "lora"; "dora"; "--steps"; "5"; "--device"; "cpu" |], "Bench"
                  [| "submit"; "s.yaml"; "--partition"; "gpu"; "--gpus-per-task"; "1"; "--time"; "01:00:00"; "--max-parallel"; "4"; "--dry-run" |], "Submit"
                  [| "status"; "s.yaml"; "--results"; "r" |], "Status" ]
            for args, kind in cases do
                let o = CommandLine.Parse args
                Expect.equal o.ExitCode 0 (sprintf "%s: %s" (String.Join(" ", args)) o.Message)
                let name = match o.Command.Command with Command.Validate _ -> "Validate" | Plan _ -> "Plan" | Summary _ -> "Summary" | Merge _ -> "Merge" | Predict _ -> "Predict" | Bench _ -> "Bench" | Submit _ -> "Submit" | Status _ -> "Status" | other -> sprintf "%A" other
                Expect.equal name kind "kind"
            let p = match (CommandLine.Parse [| "predict"; "--model"; "vit"; "--top-k"; "3"; "a.png"; "b.png" |]).Command.Command with Predict p -> p | c -> failtestf "%A" c
            Expect.equal (p.Images, p.TopK) ([ "a.png"; "b.png" ], 3) "predict images"
            let s = match (CommandLine.Parse [| "summary"; "convnext_tiny"; "--rank"; "2"; "--init-rank"; "3" |]).Command.Command with Summary s -> s | c -> failtestf "%A" c
            Expect.equal (s.Model, s.Rank, s.InitRank, s.Method) ("convnext_tiny", Nullable 2, Nullable 3, "lora") "summary"
            let sub = match (CommandLine.Parse [| "submit"; "s.yaml"; "--dry-run"; "--gpus-per-task"; "2" |]).Command.Command with Submit s -> s | c -> failtestf "%A" c
            Expect.equal (sub.DryRun, sub.GpusPerTask, sub.Results) (true, Nullable 2, "results") "submit"
        }
        test "--help exits 0 with usage" {
            let o = CommandLine.Parse [| "--help" |]
            Expect.equal o.ExitCode 0 "help"
            Expect.stringContains o.Message "plan" "lists subcommands"
        }
        test "lora help lists the commands; lora help CMD shows that command's options" {
            let all = CommandLine.Parse [| "help" |]
            Expect.equal all.ExitCode 0 "help exits 0"
            let commands = [ "validate"; "plan"; "run"; "tables"; "summary"; "merge"; "predict"; "bench"; "submit"; "status" ]
            for c in commands do
                Expect.stringContains all.Message c $"help lists {c}"
                let one = CommandLine.Parse [| "help"; c |]
                Expect.equal one.ExitCode 0 $"help {c} exits 0"
                Expect.stringContains one.Message $"USAGE: lora {c}" $"help {c} is {c}'s usage"
            Expect.stringContains (CommandLine.Parse [| "help"; "run" |]).Message "--only" "run's options"
            let bad = CommandLine.Parse [| "help"; "nosuch" |]
            Expect.equal bad.ExitCode 2 "an unknown command is bad input"
        }
    ]

/// Hand-edited specs: random cuts, duplications and junk in a real spec never crash the reader; every
/// problem comes back as an error with a position.
let hostileTests =
    let text = File.ReadAllText(quickstart ".yaml")
    let junk = [| "{"; "}"; "["; "]"; ":"; "- "; "&a "; "*a"; "!!int "; "\n"; "\t  "; "'"; "\""; "#"; "? "; "|"; ">"; "~"; "null"; "-1"; "1e999"; "\u0000" |]
    testList "hostile YAML" [
        testProp "mutated specs give errors, not exceptions" (fun (edits: (int * int * byte) list) ->
            let mutable t = text
            for pos, len, pick in edits |> List.truncate 6 do
                let p = abs pos % (t.Length + 1)
                let l = abs len % 20
                t <- (match pick % 3uy with
                      | 0uy -> t.Remove(p, min l (t.Length - p))
                      | 1uy -> t.Insert(p, junk.[int pick % junk.Length])
                      | _ -> t.Insert(p, t.Substring(p, min l (t.Length - p))))
            let es, errs, _ = YamlSpec.parse "m.yaml" t
            for e in errs do
                Expect.isGreaterThanOrEqual e.Line 0 "a line"
                Expect.isNonEmpty e.Message "a message"
            if List.isEmpty errs then Validation.suite (fun _ -> true) es |> ignore)
        test "aliases, anchors, tags and deep nesting" {
            for t in [ "- {" + text  // YamlDotNet's scanner threw InvalidOperationException here (found by the property above)
                       "a: " + String.replicate 50000 "[" + String.replicate 50000 "]"  // overflowed the stack
                       "a: " + String.replicate 50000 "- "
                       "experiments: *nope"; "a: &x [*x]"; "experiments: [" + String.replicate 2000 "[" ; "experiments:\n  - !!binary AAAA"
                       "experiments:\n  - name: 1\n    ranks: [1e999]\n    epochs: 99999999999999999999" ] do
                let _, errs, _ = YamlSpec.parse "h.yaml" t
                Expect.isNonEmpty errs (sprintf "errors for %s" (t.Substring(0, min 30 t.Length)))
        }
    ]

// ------------------------------------------------------------------ class selections, unused pretrain steps

/// Sources whose class count validation knows: (source, task, count). CIFAR-10 is told from
/// CIFAR-100 by its batch files: the folder "ten" has data_batch_1.bin and no train.bin.
let knownSources =
    [ FashionMnist None, Classification, 10
      Cifar "ten", Classification, 10
      Cifar "hundred", Classification, 100
      Composed { Canvas = 64; Objects = 2; Path = None }, Segmentation, 10 ]

let cifarFiles (p: string) = not (p.Contains "ten" && p.EndsWith "train.bin")

let classErrors (source, task) (cs: int list) =
    Validation.dataset cifarFiles "d" task { DatasetView.Of source with Classes = Some cs }

let checkOf (ext: string) (exists: string -> bool) (text: string) =
    use dir = new TempDir()
    let path = dir.File("spec" + ext)
    File.WriteAllText(path, text)
    let check = Spec.checkWith exists path
    let local (e: SpecError) = { e with File = Path.GetFileName e.File }
    Result.mapError (List.map local) check.Result, List.map local check.Warnings

let classAndPretrainTests =
    testList "class selections and unused pretrain steps" [
        testProp "any class subset in range validates; an index out of range is rejected, named at its position"
            (Prop.forAll
                (Arb.fromGen (
                    gen {
                        let! source, task, n = Gen.elements knownSources
                        let! subset = Gen.subListOf [ 0 .. n - 1 ] |> Gen.filter (List.isEmpty >> not)
                        let! order = Gen.shuffle subset
                        let! bad = Gen.oneof [ Gen.choose (n, n + 1000); Gen.choose (-1000, -1) ]
                        let! pos = Gen.choose (0, order.Length)
                        return (source, task, n), List.ofArray order, bad, pos
                    }))
                (fun ((source, task, n), cs, bad, pos) ->
                    Expect.isEmpty (classErrors (source, task) cs) (sprintf "%A validates for %A" cs source)
                    let withBad = List.insertAt pos bad cs
                    match classErrors (source, task) withBad with
                    | [ e ] ->
                        Expect.equal e.Field (sprintf "d.classes[%d]" pos) "the error points at the bad entry"
                        Expect.stringStarts e.Message (sprintf "class %d is outside " bad) "it names the value"
                        Expect.stringEnds e.Message (sprintf " classes: use 0-%d" (n - 1)) "and the valid range"
                    | errs -> failtestf "expected one error for %A on %A, got %A" withBad source errs))
        test "CIFAR-10 and CIFAR-100 are told apart by their batch files" {
            Expect.isEmpty (classErrors (Cifar "ten", Classification) [ 9 ]) "class 9 of CIFAR-10"
            Expect.equal (classErrors (Cifar "ten", Classification) [ 10 ] |> List.map (fun e -> e.Message))
                [ "class 10 is outside CIFAR-10's 10 classes: use 0-9" ] "class 10 of CIFAR-10"
            let neither (p: string) = not (p.EndsWith ".bin")
            Expect.isEmpty (Validation.dataset neither "d" Classification (cifar "c" |> classes [ 99 ])) "unknown layout: up to 99"
            Expect.equal (Validation.dataset neither "d" Classification (cifar "c" |> classes [ 100 ]) |> List.map (fun e -> e.Message))
                [ "class 100 is outside CIFAR's 100 classes: use 0-99" ] "unknown layout: at most 100 classes"
        }
        test "image folders: any class from 0 validates here (the runner knows their count)" {
            Expect.isEmpty (classErrors (ImageFolder "data", Classification) [ 0; 57; 3 ]) "not checked against a count"
        }
        test "the builders reject out-of-range and repeated classes with the field" {
            let errsOf f = try f () |> ignore; [] with SpecException errs -> errs |> List.map (fun e -> e.Field, e.Message)
            Expect.equal (errsOf (fun () -> pretrain { name "p"; model (zoo "vit" []); dataset (fashionMnist |> classes [ 0; 12 ]) }))
                [ "p.dataset.classes[1]", "class 12 is outside Fashion-MNIST's 10 classes: use 0-9" ] "pretrain builder"
            Expect.equal (errsOf (fun () -> experiment { name "t"; model (zoo "vit" []); dataset (cifar "c" |> classes [ 3; 3 ]); methods [ head ] }))
                [ "t.datasets[0].classes[1]", "class 3 is listed twice (also classes[0]): list each class once" ] "experiment builder"
        }
        test "YAML: an unused pretrain step is a warning with its location, and the spec loads" {
            let text = withSteps [ stepP; stepWith "q" "classes: [5, 6]" ] "p"
            let result, warnings = checkOf ".yaml" fakeExists text
            Expect.isOk result "warnings do not stop loading"
            let line, col = locate text "name: q" 0
            match warnings with
            | [ w ] ->
                Expect.equal (w.Field, w.Line, w.Column) ("pretrain[1]", line, col) "located at the step"
                Expect.equal (w.ToWarningString())
                    (sprintf "spec.yaml:%d:%d: warning: pretrain[1]: pretrain step 'q' is not used by any experiment: use it as a base model, model: { pretrain: q }, or remove it" line col)
                    "printed as file:line:col: warning: field: message"
            | ws -> failtestf "expected one warning, got %A" ws
            let used, none = checkOf ".yaml" fakeExists (withSteps [ stepP ] "p")
            Expect.isOk used "a used step"
            Expect.isEmpty none "no warning for a used step"
        }
        test "YAML: an unused pretrain step with an error gives the error and the warning" {
            let result, warnings = checkOf ".yaml" fakeExists (withSteps [ stepP; stepWith "q" "classes: [12]" ] "p")
            match result with
            | Error [ e ] -> Expect.equal e.Field "pretrain[1].dataset.classes[0]" "the error"
            | other -> failtestf "expected one error, got %A" other
            Expect.equal (warnings |> List.map (fun w -> w.Field)) [ "pretrain[1]" ] "the warning"
        }
        test "F# script: unused pretrain bindings are found, checked with the disk, and warned about" {
            let script =
                String.concat "\n"
                    [ "let spare = pretrain { name \"spare\"; model (zoo \"vit\" []); dataset fashionMnist }"
                      "let broken = pretrain { name \"broken\"; model (zoo \"vit\" []); dataset (fashionMnistAt \"missing/fm\") }"
                      "let used = pretrain { name \"used\"; model (zoo \"vit\" []); dataset fashionMnist }"
                      "let experiments = [ experiment { name \"t\"; model (fromPretrain used); dataset fashionMnist; methods [ head ] } ]"
                      "" ]
            let result, warnings = checkOf ".fsx" fakeExists script
            match result with
            | Error errs ->
                Expect.equal (errs |> List.map (fun e -> e.File, e.Field, e.Message))
                    [ "spec.fsx", "broken.dataset.path", "Fashion-MNIST data set not found at 'missing/fm'" ] "the unused step's path is checked"
            | Ok _ -> failtest "expected the broken step's error"
            Expect.equal (warnings |> List.map (fun w -> w.Field, w.Message))
                [ "spare", "pretrain step 'spare' (let spare) is not used by any experiment: use it as a base model, model (fromPretrain spare), or remove it"
                  "broken", "pretrain step 'broken' (let broken) is not used by any experiment: use it as a base model, model (fromPretrain broken), or remove it" ]
                "one warning per unused binding, in order"
        }
        test "the committed specs validate clean: no errors, no warnings" {
            let specs =
                [ yield! Directory.GetFiles(Path.Combine(repoRoot, "experiments"))
                  yield! Directory.GetFiles(fixture "specs") ]
                |> List.filter (fun f -> f.EndsWith ".yaml" || f.EndsWith ".fsx")
            Expect.isGreaterThanOrEqual specs.Length 5 "experiments/ and tests/fixtures/specs"
            for spec in specs do
                let check = Spec.checkWith (fun _ -> true) spec
                Expect.isOk check.Result (sprintf "%s: %A" spec check.Result)
                Expect.isEmpty check.Warnings (sprintf "%s: no warnings" spec)
        }
    ]

let tests = testList "Dsl" [ unitTests; propertyTests; validationTests; specTests; cliTests; hostileTests; classAndPretrainTests ]
