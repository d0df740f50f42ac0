/// Any option is a grid axis: training settings and method options as lists, named method variants
/// with settings of their own (YAML and F#), their run names, hashes and located errors.
module Lora.Tests.GridAxesTests

open Expecto
open FsCheck
open FsCheck.FSharp
open Lora.Dsl
open Lora.Tests.Generators
open Lora.Tests.DslTests

let private spec (body: string) =
    "experiments:\n  - name: t\n    model: vit_tiny_patch16_224\n    dataset: { source: fashion_mnist }\n" + body

let private runsOf (body: string) = parseOk (spec body) |> List.collect Grid.expand
let private namesOf body = runsOf body |> List.map (fun r -> r.Name)
let private errors body = errorsOf ".yaml" fakeExists (spec body)

/// The imagenet-resnet18 experiment as committed before the recipe existed, and its runs' hashes then.
let private imagenetBefore =
    """experiments:
  - name: imagenet-resnet18
    model: resnet18_mlnet
    dataset:
      source: fashion_mnist
      limit_train: 1000
      limit_val: 500
    image_size: 32
    methods:
      - full
      - head
      - lora: { targets: ['re:layer\d\.\d\.conv[12]'] }
      - dora: { targets: ['re:layer\d\.\d\.conv[12]'] }
    ranks: [4, 8]
    epochs: 3
    batch: 64
    lr: 0.001
"""

let tests =
    testList "grid axes" [
        test "experiment-level lists expand the product; varying values name the runs" {
            let names = namesOf "    methods: [head, lora]\n    ranks: [4]\n    lr: [0.001, 0.003]\n    weight_decay: [0, 0.05]\n    epochs: 2\n"
            Expect.equal names
                [ "head-lr0.001-wd0"; "head-lr0.001-wd0.05"; "head-lr0.003-wd0"; "head-lr0.003-wd0.05"
                  "lora-r4-lr0.001-wd0"; "lora-r4-lr0.001-wd0.05"; "lora-r4-lr0.003-wd0"; "lora-r4-lr0.003-wd0.05" ] "names"
            let runs = runsOf "    methods: [lora]\n    ranks: [4]\n    lr: [0.001, 0.003]\n"
            Expect.equal (runs |> List.map (fun r -> r.Training.Lr)) [ 0.001; 0.003 ] "each run has its lr"
        }
        test "a one-value list is the value: the run keeps its name and hash" {
            Expect.equal (hashes (parseOk (spec "    methods: [lora]\n    ranks: [4]\n    lr: [0.003]\n")))
                (hashes (parseOk (spec "    methods: [lora]\n    ranks: [4]\n    lr: 0.003\n"))) "same hash"
        }
        test "named variants of one method sit side by side, with settings of their own" {
            let runs =
                runsOf "    methods:\n      - head: { lr: 0.01 }\n      - lora: { name: lora-qkv, targets: [qkv] }\n      - lora: { name: lora-mlp, targets: [fc1, fc2], lr: 0.003, epochs: 3, weight_decay: 0.01 }\n    ranks: [4]\n"
            Expect.equal (runs |> List.map (fun r -> r.Name)) [ "head"; "lora-qkv-r4"; "lora-mlp-r4" ] "names"
            Expect.equal (runs |> List.map (fun r -> r.Training.Lr, r.Training.Epochs, r.Training.WeightDecay))
                [ 0.01, 1, 0.0; 0.001, 1, 0.0; 0.003, 3, 0.01 ] "per-variant lr, epochs, weight_decay"
            Expect.equal (runs |> List.map (fun r -> match r.Method with Lora o -> o.Targets | _ -> [])) [ []; [ "qkv" ]; [ "fc1"; "fc2" ] ] "targets"
        }
        test "a variant's setting replaces the experiment's list of that key" {
            let names = namesOf "    methods:\n      - lora\n      - dora: { lr: 0.01 }\n    ranks: [4]\n    lr: [0.001, 0.003]\n"
            Expect.equal names [ "lora-r4-lr0.001"; "lora-r4-lr0.003"; "dora-r4" ] "dora has its own lr"
        }
        test "method options as lists are axes too (alpha, dropout, targets, init_rank, ratio)" {
            let names = namesOf "    methods:\n      - lora: { alpha: [8, 16], targets: [[qkv], [qkv, proj]] }\n      - adalora: { init_rank: [8, 12] }\n      - adapter: { ratio: [0.25, 0.5] }\n    ranks: [4]\n"
            Expect.equal names
                [ "lora-r4-alpha8-targets-qkv"; "lora-r4-alpha8-targets-qkv+proj"; "lora-r4-alpha16-targets-qkv"; "lora-r4-alpha16-targets-qkv+proj"
                  "adalora-r4-init_rank8"; "adalora-r4-init_rank12"; "adapter-ratio0.25"; "adapter-ratio0.5" ] "names"
            let regex = namesOf "    methods:\n      - lora: { targets: [['re:blocks\\.\\d+\\.attn'], [qkv]] }\n    ranks: [4]\n"
            Expect.equal regex [ "lora-r4-targets1"; "lora-r4-targets-qkv" ] "a target a name cannot hold is numbered"
        }
        test "F#: variants and sweeps give the YAML's records and hashes" {
            let qkv = { LoraOptions.Defaults with Targets = [ "qkv" ] }
            let e =
                experiment {
                    name "t"
                    model (zoo "vit_tiny_patch16_224" [])
                    dataset fashionMnist
                    methods [ full ]
                    variants [ head |> variant |> withLr 0.01; Lora qkv |> named "lora-qkv" |> withEpochs 3 |> withLr 0.003 ]
                    ranks [ 4 ]
                    sweep [ Setting.WeightDecay 0.0; Setting.WeightDecay 0.05 ]
                }
            let yaml =
                parseOk (spec "    methods:\n      - full\n      - head: { lr: 0.01 }\n      - lora: { name: lora-qkv, targets: [qkv], epochs: 3, lr: 0.003 }\n    ranks: [4]\n    weight_decay: [0, 0.05]\n")
            Expect.equal (hashes [ e ]) (hashes yaml) "same hashes"
            Expect.equal (Grid.expand e |> List.map (fun r -> r.Name)) [ "full-wd0"; "full-wd0.05"; "head-wd0"; "head-wd0.05"; "lora-qkv-r4-wd0"; "lora-qkv-r4-wd0.05" ] "names"
        }
        test "specs that use no new key keep their hashes (the committed imagenet-resnet18 results)" {
            Expect.equal (hashes (parseOk imagenetBefore))
                [ "e7a1abf06e3d"; "8a731da2af0f"; "ef3d90ee1e87"; "4db3a13cb8d1"; "677de567417e"; "94057a459b0d" ] "hashes of results/"
        }
        test "imagenet-resnet18.yaml and .fsx: the same records and hashes, each method with its learning rate" {
            let load ext =
                match Spec.loadWith (fun _ -> true) (System.IO.Path.Combine(repoRoot, "experiments", "imagenet-resnet18" + ext)) with
                | Ok es -> es
                | Error e -> failtestf "%A" e
            let yaml, fsx = load ".yaml", load ".fsx"
            Expect.equal fsx yaml "same records"
            Expect.equal (hashes fsx) (hashes yaml) "same hashes"
            Expect.equal (Spec.runs yaml |> List.map (fun r -> r.Name, r.Training.Lr, r.Training.Warmup, r.Training.Epochs))
                [ "full", 0.001, 0, 3; "head", 0.003, 0, 3; "lora-r4", 0.003, 16, 3; "lora-r8", 0.003, 16, 3; "dora-r4", 0.003, 16, 3; "dora-r8", 0.003, 16, 3 ]
                "names, learning rates, warm-ups and epochs"
        }
        test "a tune of a base with a classifier says which head it starts from (the default changed to fresh)" {
            let e = experiment { name "t"; model (weights "vit" [] "w.safetensors"); dataset fashionMnist; methods [ head ] }
            let fresh = Grid.expand e |> List.head
            let reuse = { fresh with Training = { fresh.Training with Head = ReuseHead } }
            Expect.stringContains (Canonical.json fresh) "\"head\":\"fresh\"" "written"
            Expect.notEqual (Canonical.hash reuse) (Canonical.hash fresh) "reuse is another run"
            let zooRun = Grid.expand { e with Models = [ zoo "vit" [] ] } |> List.head
            Expect.isFalse ((Canonical.json zooRun).Contains "\"head\":\"fresh\"") "a zoo model has no head to reuse: not written"
        }
        testProp "expansion counts: the product of the axes, names unique, each run's settings from its cell" (
            Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.choose (1, 3)) (Gen.choose (1, 3)) (Gen.choose (1, 2)))) (fun (nLr, nWd, nAlpha) ->
                let lrs = [ 0.001; 0.003; 0.01 ] |> List.truncate nLr
                let wds = [ 0.0; 0.01; 0.05 ] |> List.truncate nWd
                let alphas = [ 8; 16 ] |> List.truncate nAlpha
                let list xs = "[" + String.concat ", " xs + "]"
                let body =
                    sprintf "    methods:\n      - head\n      - lora: { alpha: %s }\n    ranks: [2, 4]\n    lr: %s\n    weight_decay: %s\n"
                        (list (List.map string alphas)) (list (List.map string lrs)) (list (List.map string wds))
                let runs = runsOf body
                Expect.equal runs.Length (nLr * nWd * (1 + 2 * nAlpha)) "head + lora × ranks × alphas, each × lr × wd"
                Expect.equal (runs |> List.map (fun r -> r.Name) |> List.distinct).Length runs.Length "unique names"
                Expect.equal (runs |> List.map (fun r -> r.Training.Lr, r.Training.WeightDecay) |> List.distinct |> List.length) (nLr * nWd) "every cell"))
        test "recipe keys parse into the run's training; defaults written out keep the hash" {
            let runs =
                runsOf "    methods: [head]\n    sched: step\n    decay_epochs: 2\n    decay_rate: 0.5\n    min_lr: 0.0001\n    clip_grad: none\n    gradient_accumulation_steps: 2\n    label_smoothing: 0.1\n    hflip: true\n    crop_padding: 4\n    random_resized_crop: 0.35\n    early_stopping_patience: 3\n    head: reuse\n"
            let t = runs.Head.Training
            Expect.equal (t.Schedule, t.MinLr, t.ClipGrad, t.GradAccum, t.LabelSmoothing) (Step(2, 0.5), 0.0001, None, 2, 0.1) "schedule, clipping, accumulation, smoothing"
            Expect.equal (t.HFlip, t.CropPadding, t.RandomResizedCrop) (true, 4, Some 0.35) "augmentation"
            Expect.equal (t.Patience, t.Select, t.Head) (Some 3, BestEpoch, ReuseHead) "early stopping selects the best epoch unless select says otherwise"
            let explicitDefaults = "    methods: [head]\n    sched: cosine\n    clip_grad: 1.0\n    gradient_accumulation_steps: 1\n    label_smoothing: 0\n    hflip: false\n    select: last\n    head: fresh\n"
            Expect.equal (hashes (parseOk (spec explicitDefaults))) (hashes (parseOk (spec "    methods: [head]\n"))) "explicit defaults, same hash"
            let body = "    methods: [head]\n    sched: step\n    decay_epochs: 2\n    label_smoothing: [0, 0.1]\n    early_stopping_patience: 3\n"
            Expect.equal (hashes (parseOk (YamlSpec.write (parseOk (spec body))))) (hashes (parseOk (spec body))) "written and read back"
        }
        test "recipe errors are located" {
            let check body needle (words: string) =
                let errs = errors body
                match errs |> List.tryFind (fun e -> e.Message.Contains words) with
                | Some e -> Expect.equal (e.Line, e.Column) (locate (spec body) needle 0) (sprintf "%s: located (%A)" words e)
                | None -> failtestf "no error with '%s' in %A" words errs
            check "    methods: [head]\n    sched: step\n" "step" "needs decay_epochs"
            check "    methods: [head]\n    decay_rate: 0.5\n" "0.5" "applies to sched: step only"
            check "    methods: [head]\n    label_smoothing: 1.5\n" "1.5" "label_smoothing must be in [0, 1)"
            check "    methods: [head]\n    head: old\n" "old" "expected one of fresh, reuse"
            check "    methods: [head]\n    random_resized_crop: 2\n" "2\n" "smallest area fraction"
            check "    methods: [head]\n    early_stopping_patience: 0\n" "0\n" "at least 1 epoch"
        }
        test "located errors: empty lists, a value twice, two runs with one name" {
            let at (body: string) (needle: string) = locate (spec body) needle 0
            let check body needle (words: string) =
                let errs = errors body
                let e = errs |> List.tryFind (fun e -> e.Message.Contains words)
                match e with
                | Some e -> Expect.equal (e.Line, e.Column) (at body needle) (sprintf "%s: located (%A)" words e)
                | None -> failtestf "no error with '%s' in %A" words errs
            check "    methods: [lora]\n    ranks: [4]\n    lr: []\n" "[]\n" "is empty"
            check "    methods:\n      - lora: { alpha: [] }\n    ranks: [4]\n" "[] }" "is empty"
            check "    methods: [lora]\n    ranks: [4]\n    lr: [0.001, 0.001]\n" "[0.001" "lists a value twice"
            check "    methods:\n      - lora: { name: x }\n      - dora: { name: x }\n    ranks: [4]\n" "- lora" "two runs would be named 'x-r4'"
            check "    methods:\n      - lora\n      - lora: { lr: 0.01 }\n    ranks: [4]\n" "- lora" "give method variants their own name"
            check "    methods:\n      - lora: { name: 'a/b' }\n    ranks: [4]\n" "'a/b'" "must not contain"
            check "    methods: [head]\n    ranks: [4]\n    gradient_accumulation_steps: [1, 0]\n" "[1, 0]" "at least 1"
        }
    ]
