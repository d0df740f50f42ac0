/// Runs that describe themselves: every run writes a model card, and the commands that consume a
/// run (predict, forward, merge, export) need nothing but `--run HASH`.
module Lora.Tests.RunCardTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Lora.Runner
open Lora.Tests.Generators

let private dispatch (args: string list) =
    use out = new StringWriter()
    use err = new StringWriter()
    let code = Commands.Dispatch(Array.ofList args, (fun () -> TrainingExecutor() :> IRunExecutor), out, err)
    code, out.ToString(), err.ToString()

let private tinySpec = fixture "specs/tiny.yaml"

/// The tiny plan (a pretraining, then LoRA, Adapter and head-only tunes) run once for these tests.
let tinyResults =
    lazy
        (let root = Path.Combine(Path.GetTempPath(), "lora-cards-" + Guid.NewGuid().ToString("N"))
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(root, true) with _ -> ())
         let results = Path.Combine(root, "results")
         let code, out, err = dispatch [ "run"; tinySpec; "--results"; results ]
         if code <> 0 then failtestf "the tiny plan failed (%d):\n%s%s" code out err
         results)

/// The hash of the run named `id` in a results folder (from its card).
let hashOf (results: string) (id: string) =
    Directory.GetDirectories results
    |> Array.find (fun d -> File.Exists(Path.Combine(d, RunCard.FileName)) && RunCard.Read(Path.Combine(d, RunCard.FileName)).Id = id)
    |> Path.GetFileName

/// Fashion-MNIST test images of classes 5-9 as grey PNG files.
let private images (dir: TempDir) =
    let set = Lora.Core.Data.FashionMnist.Load(null, false).SelectClasses(5, 6, 7, 8, 9)
    [ for i in 0..3 ->
        let path = dir.File(sprintf "img%d.png" i)
        Lora.Core.Data.Png.Write(path, set.Image i, 1, 28, 28)
        path ]

let private predictJson (args: string list) =
    let code, out, err = dispatch ([ "predict"; "--json"; "--top-k"; "5" ] @ args)
    Expect.equal code 0 err
    JsonNode.Parse(out).AsArray()

let private scores (json: JsonArray) =
    [ for img in json -> [ for p in img.["predictions"].AsArray() -> string p.["label"], float p.["score"] ] ]

/// A copy of the tiny results as a fresh clone has them: metrics and cards, no artifacts.
let private committedCopy (dir: TempDir) =
    let src = tinyResults.Force()
    let results = dir.File "results"
    for d in Directory.GetDirectories src do
        let target = Path.Combine(results, Path.GetFileName d)
        Directory.CreateDirectory target |> ignore
        for f in [ ResultsStore.MetricsFile; RunCard.FileName ] do File.Copy(Path.Combine(d, f), Path.Combine(target, f))
    results

/// Sets metrics.accuracy of one committed result (a result that no longer reproduces).
let private tamper (metricsFile: string) (accuracy: float) =
    let o = JsonNode.Parse(File.ReadAllText metricsFile).AsObject()
    o.["metrics"].AsObject().["accuracy"] <- JsonValue.Create accuracy
    File.WriteAllText(metricsFile, o.ToJsonString())

/// The tiny plan's pretraining (result, card and weights) in a fresh results folder: a base to tune.
let private withTinyPretrain (dir: TempDir) =
    let src = tinyResults.Force()
    let results = dir.File "results"
    let pretrain = hashOf src "pretrain/tiny-vit"
    for from, to' in [ src, results; src + "-artifacts", results + "-artifacts" ] do
        let d = Path.Combine(from, pretrain)
        for f in Directory.GetFiles d do
            Directory.CreateDirectory(Path.Combine(to', pretrain)) |> ignore
            File.Copy(f, Path.Combine(to', pretrain, Path.GetFileName f))
    results

/// An ImageFolder tree of 56-pixel RGB PNGs made from Fashion-MNIST classes 5-9 (ten per class).
let private rgbFolder (root: string) =
    let set = Lora.Core.Data.FashionMnist.Load(null, false).SelectClasses(5, 6, 7, 8, 9)
    let picked = [| for c in 0..4 do yield! (Array.indexed set.Labels |> Array.filter (fun (_, l) -> l = c) |> Array.take 10 |> Array.map fst) |]
    let px =
        [| for i in picked do
            let big = Lora.Core.Data.ImageFile.ResizeBilinear(set.Image i, 1, 28, 28, 56, 56)
            yield! big; yield! big; yield! big |]
    let rgb = Lora.Core.Data.ImageDataset(px, picked |> Array.map (fun i -> set.Labels.[i]), 3, 56, 56, set.Classes)
    Lora.Core.Data.ImageFolder.Write(rgb, root)

let tests =
    testSequenced <| testList "RunCard" [
        test "every run of the tiny plan writes a model card that says what it is" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            let results = tinyResults.Force()
            let card id = RunCard.Read(Path.Combine(results, hashOf results id, RunCard.FileName))
            let lora = card "tiny/lora-r2"
            Expect.equal lora.Model "vit" "model"
            Expect.equal lora.InChans 1L "grey input"
            Expect.equal lora.InputSize 28 "trained at 28 px"
            Expect.sequenceEqual lora.Mean [ 0.5f ] "mean"
            Expect.sequenceEqual lora.Std [ 0.5f ] "std"
            Expect.sequenceEqual lora.Classes [ "Sandal"; "Shirt"; "Sneaker"; "Bag"; "Ankle boot" ] "class names of classes 5-9, in label order"
            Expect.equal lora.Rank 2 "rank"
            Expect.equal (string lora.MethodConfig.["kind"]) "lora" "method config"
            Expect.equal (float lora.MethodConfig.["alpha"]) 4.0 "alpha resolved (2 x rank)"
            Expect.equal lora.BaseRun (hashOf results "pretrain/tiny-vit") "starts from the pretraining run"
            Expect.isTrue lora.Mergeable "LoRA merges"
            Expect.isFalse (card "tiny/adapter-r2").Mergeable "a bottleneck Adapter does not"
            Expect.equal (card "tiny/head").Weights RunCard.ModelWeights "head-only keeps the whole model"
            Expect.equal (float ((card "pretrain/tiny-vit").Options.["num_classes"])) 5.0 "constructor arguments kept"
        }

        test "predict --run needs nothing else and equals predict with every flag spelt out; flags override the card" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            let results = tinyResults.Force()
            use dir = new TempDir()
            let imgs = images dir
            let lora = hashOf results "tiny/lora-r2"
            let byRun = predictJson ([ "--run"; lora; "--results"; results ] @ imgs)
            let card = RunCard.Read(Path.Combine(results, lora, RunCard.FileName))
            let config = dir.File "config.json"
            File.WriteAllText(config, card.Options.ToJsonString())
            let labels = dir.File "labels.txt"
            File.WriteAllLines(labels, card.Classes)
            let artifacts = results + "-artifacts"
            let explicitFlags =
                predictJson ([ "--model"; "vit"; "--model-config"; config
                               "--weights"; Path.Combine(artifacts, hashOf results "pretrain/tiny-vit", "model.safetensors")
                               "--adapter"; Path.Combine(artifacts, lora, "adapter"); "--labels"; labels; "--mean"; "0.5"; "--std"; "0.5" ] @ imgs)
            Expect.equal (scores byRun) (scores explicitFlags) "the same labels and scores"
            Expect.equal (string byRun.[0].["predictions"].[0].["label"] |> fun l -> Array.contains l card.Classes) true "labels are the class names"
            // the run's folder works as well as its hash; an explicit --mean overrides the card's
            let byFolder = predictJson ([ "--run"; Path.Combine(results, lora) ] @ imgs)
            Expect.equal (scores byFolder) (scores byRun) "a results/HASH folder names the run"
            let unnormalised = predictJson ([ "--run"; lora; "--results"; results; "--mean"; "0"; "--std"; "1" ] @ imgs)
            Expect.notEqual (scores unnormalised) (scores byRun) "--mean/--std override the card"
        }

        test "a bottleneck-Adapter run predicts and forwards (applied, not merged); merge refuses it with the reason, export writes its ops (ONNX Runtime = forward)" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            let results = tinyResults.Force()
            use dir = new TempDir()
            let imgs = images dir
            let adapter = hashOf results "tiny/adapter-r2"
            let json = predictJson ([ "--run"; adapter; "--results"; results ] @ imgs)
            Expect.equal json.Count imgs.Length "one prediction per image"
            let input = dir.File "in.safetensors"
            use x = TorchSharp.torch.rand(2L, 1L, 28L, 28L)
            Lora.Core.IO.Safetensors.Save(input, [ Collections.Generic.KeyValuePair("input", x) ])
            let code, _, err = dispatch [ "forward"; "--run"; adapter; "--results"; results; "--input"; input; "--out"; dir.File "out.safetensors" ]
            Expect.equal code 0 err
            let y = Lora.Core.IO.Safetensors.Load(dir.File "out.safetensors").["output"]
            Expect.sequenceEqual y.shape [| 2L; 5L |] "five logits per input"
            let code, _, err = dispatch [ "merge"; "--run"; adapter; "--results"; results; "--out"; dir.File "m.safetensors" ]
            Expect.equal code 1 "merge refuses"
            Expect.stringContains err "not mergeable" "merge says why"
            Expect.isFalse (File.Exists(dir.File "m.safetensors")) "merge wrote nothing"
            // (export refused it too until the adapters' ops went into the graph)
            let code, _, err = dispatch [ "export"; "--run"; adapter; "--results"; results; "--out"; dir.File "m.onnx" ]
            Expect.equal code 0 err
            use onnx = ZooExportTests.ortRun (dir.File "m.onnx") x
            Expect.isLessThanOrEqual (ZooExportTests.relErr y onnx) 1e-4 "ONNX Runtime equals forward --run (adapters and the trained head)"
        }

        test "a Convpass run exports with its bypasses as graph ops (ONNX Runtime = forward --run); merge refuses it" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let results = withTinyPretrain dir
            let spec = dir.File "convpass.yaml"
            let pretrainBlock = File.ReadAllText(tinySpec).Split("experiments:").[0]
            let lines =
                [ "experiments:"; "  - name: cp"; "    model: { pretrain: tiny-vit }"
                  "    dataset: { source: fashion_mnist, classes: [5, 6, 7, 8, 9], limit_train: 160, limit_val: 50 }"
                  "    methods: [convpass]"; "    ranks: [2]"; "    epochs: 1"; "    batch: 16"; "    lr: 0.003" ]
            File.WriteAllText(spec, pretrainBlock + String.concat "\n" lines + "\n")
            let code, out, err = dispatch [ "run"; spec; "--results"; results ]
            Expect.equal code 0 (out + err)
            let run = hashOf results "cp/convpass-r2"
            Expect.isFalse (RunCard.Read(Path.Combine(results, run, RunCard.FileName))).Mergeable "Convpass does not merge"
            let input = dir.File "in.safetensors"
            use x = TorchSharp.torch.rand(3L, 1L, 28L, 28L)
            Lora.Core.IO.Safetensors.Save(input, [ Collections.Generic.KeyValuePair("input", x) ])
            let code, _, err = dispatch [ "forward"; "--run"; run; "--results"; results; "--input"; input; "--out"; dir.File "out.safetensors" ]
            Expect.equal code 0 err
            let y = Lora.Core.IO.Safetensors.Load(dir.File "out.safetensors").["output"]
            let code, _, err = dispatch [ "merge"; "--run"; run; "--results"; results; "--out"; dir.File "m.safetensors" ]
            Expect.equal code 1 "merge refuses"
            Expect.stringContains err "not mergeable" "merge says why"
            // (export refused Convpass until its bypasses' ops went into the graph)
            let code, out, err = dispatch [ "export"; "--run"; run; "--results"; results; "--out"; dir.File "m.onnx" ]
            Expect.equal code 0 err
            Expect.stringContains out "wrote" "says what it wrote"
            use onnx = ZooExportTests.ortRun (dir.File "m.onnx") x
            Expect.isLessThanOrEqual (ZooExportTests.relErr y onnx) 1e-4 "ONNX Runtime equals forward --run (bypasses and the trained head)"
        }

        test "merge --run and export --run of a LoRA run need nothing else; forward --run equals forward of the merged weights" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            let results = tinyResults.Force()
            use dir = new TempDir()
            let lora = hashOf results "tiny/lora-r2"
            let merged = dir.File "merged.safetensors"
            let code, _, err = dispatch [ "merge"; "--run"; lora; "--results"; results; "--out"; merged ]
            Expect.equal code 0 err
            let code, _, err = dispatch [ "export"; "--run"; lora; "--results"; results; "--out"; dir.File "m.onnx" ]
            Expect.equal code 0 err
            let input = dir.File "in.safetensors"
            use x = TorchSharp.torch.rand(3L, 1L, 28L, 28L)
            Lora.Core.IO.Safetensors.Save(input, [ Collections.Generic.KeyValuePair("input", x) ])
            let config = dir.File "config.json"
            File.WriteAllText(config, RunCard.Read(Path.Combine(results, lora, RunCard.FileName)).Options.ToJsonString())
            let code, _, err = dispatch [ "forward"; "--run"; lora; "--results"; results; "--input"; input; "--out"; dir.File "a.safetensors" ]
            Expect.equal code 0 err
            let code, _, err = dispatch [ "forward"; "--model"; "vit"; "--model-config"; config; "--weights"; merged; "--input"; input; "--out"; dir.File "b.safetensors" ]
            Expect.equal code 0 err
            let a = Lora.Core.IO.Safetensors.Load(dir.File "a.safetensors").["output"]
            let b = Lora.Core.IO.Safetensors.Load(dir.File "b.safetensors").["output"]
            Expect.isTrue (a.allclose(b, rtol = 1e-5, atol = 1e-6)) "the same outputs"
        }

        test "--run that names nothing, or a run without a card: one clear line" {
            use dir = new TempDir()
            let code, _, err = dispatch [ "predict"; "--run"; "abcdef"; "--results"; dir.Path; "x.png" ]
            Expect.equal code 1 "exit 1"
            Expect.stringContains err "no run 'abcdef'" "says which run"
            Directory.CreateDirectory(dir.File "0123456789ab") |> ignore
            let code, _, err = dispatch [ "merge"; "--run"; dir.File "0123456789ab"; "--out"; dir.File "m.safetensors" ]
            Expect.equal code 1 "exit 1"
            Expect.stringContains err RunCard.FileName "names the missing card"
            let code, _, err = dispatch [ "forward"; "--input"; "x"; "--out"; "y" ]
            Expect.equal code 2 err
            Expect.stringContains err "--model" "says to give --model or --run"
        }
    
        test "a fresh clone: plan says the pretraining's artifacts are missing; run recomputes them first and checks its metrics" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let results = committedCopy dir
            let pretrain = hashOf results "pretrain/tiny-vit"
            let code, out, _ = dispatch [ "plan"; tinySpec; "--results"; results ]
            Expect.equal code 0 out
            let line = out.Split('\n') |> Array.find (fun l -> l.StartsWith pretrain)
            Expect.stringContains line "done, artifacts missing" "the plan knows the weights are not there"
            let committed = File.ReadAllText(Path.Combine(results, pretrain, ResultsStore.MetricsFile))
            let code, out, err = dispatch [ "run"; tinySpec; "--results"; results; "--only"; "tiny/head"; "--force" ]
            Expect.equal code 0 (out + err)
            Expect.stringContains out ("recompute " + pretrain) "the pretraining is recomputed first"
            Expect.stringContains out "equal the committed ones bit for bit" "and reproduces its committed metrics"
            Expect.isTrue (File.Exists(Path.Combine(results + "-artifacts", pretrain, "model.safetensors"))) "its weights are back"
            Expect.equal (File.ReadAllText(Path.Combine(results, pretrain, ResultsStore.MetricsFile))) committed "the committed metrics are kept"
            let code, out, _ = dispatch [ "plan"; tinySpec; "--results"; results ]
            Expect.isFalse (out.Contains "artifacts missing") "nothing missing now"
        }

        test "a recomputed base whose metrics differ from the committed ones is reported by run and metric; the committed result stays" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let results = committedCopy dir
            let pretrain = hashOf results "pretrain/tiny-vit"
            let metrics = Path.Combine(results, pretrain, ResultsStore.MetricsFile)
            tamper metrics 0.125
            let tampered = File.ReadAllText metrics
            let code, out, err = dispatch [ "run"; tinySpec; "--results"; results; "--only"; "tiny/lora-r2"; "--force" ]
            Expect.equal code 0 (out + err)
            Expect.stringContains out ("DIFFERENT " + pretrain + " pretrain/tiny-vit") "said loudly, with the run"
            Expect.stringContains out "pretrain/tiny-vit: metrics.accuracy: committed 0.125, recomputed" "and the metric"
            Expect.stringContains out "1 with different metrics" "counted in the summary"
            Expect.equal (File.ReadAllText metrics) tampered "the committed metrics.json is kept"
        }

        test "select: best records the selected epoch in the run's record (selected_epoch and selection)" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let spec = dir.File "best.yaml"
            File.WriteAllText(spec, File.ReadAllText(tinySpec).Replace("methods: [lora, adapter, head]", "methods: [head]\n    select: best\n    early_stopping_patience: 1").Replace("    epochs: 2\n    batch: 16\n    lr: 0.003\n", "    epochs: 3\n    batch: 16\n    lr: 0.003\n"))
            let results = dir.File "results"
            let code, out, err = dispatch [ "run"; spec; "--results"; results ]
            Expect.equal code 0 (out + err)
            let record = RunRecordJson.ReadFile(Path.Combine(results, hashOf results "tiny/head", ResultsStore.MetricsFile))
            Expect.isSome (Option.ofNullable record.SelectedEpoch) "the selected epoch is recorded"
            Expect.stringStarts record.Selection "best validation accuracy" "and how it was chosen"
        }

        test "run --verify recomputes every committed result, checks each bit for bit and writes the tables; a difference exits 1" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let results = committedCopy dir
            let tables = dir.File "tables"
            let code, out, err = dispatch [ "run"; tinySpec; "--results"; results; "--verify"; "--write-tables"; tables ]
            Expect.equal code 0 (out + err)
            Expect.stringContains out "4 of 4 committed result(s) reproduced bit for bit, 0 differ" "all four reproduce"
            Expect.isTrue (File.Exists(Path.Combine(tables, "tiny.md"))) "the tables are written"
            // of the committed results (byte-identical to `lora tables` on them), not the recomputed ones
            let fromCommitted = dir.File "committed-tables"
            let code, _, err = dispatch [ "tables"; "--results"; results; "--out"; fromCommitted ]
            Expect.equal code 0 err
            Expect.equal (File.ReadAllText(Path.Combine(tables, "tiny.md"))) (File.ReadAllText(Path.Combine(fromCommitted, "tiny.md"))) "the committed results' table"
            let lora = hashOf results "tiny/lora-r2"
            Expect.isTrue (File.Exists(Path.Combine(results + "-artifacts", lora, "adapter", "adapter_model.safetensors"))) "the weights are in the artifacts folder"
            tamper (Path.Combine(results, lora, ResultsStore.MetricsFile)) 0.5
            let code, out, _ = dispatch [ "run"; tinySpec; "--results"; results; "--verify" ]
            Expect.equal code 1 "exit 1 on a difference"
            Expect.stringContains out ("DIFFERENT " + lora + " tiny/lora-r2") "names the run"
            Expect.stringContains out "tiny/lora-r2: metrics.accuracy: committed 0.5, recomputed" "and the metric"
            Expect.stringContains out "3 of 4 committed result(s) reproduced" "the others still reproduce"
        }
    
        test "inputs follow the model: RGB 56-pixel folder images tune the 1-channel 28-pixel pretrained ViT, and predict takes such images" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let results = withTinyPretrain dir
            let folder = dir.File "shoes"
            rgbFolder folder
            let spec = dir.File "folder.yaml"
            let pretrainBlock = File.ReadAllText(tinySpec).Split("experiments:").[0]
            let lines =
                [ "experiments:"; "  - name: folder"; "    model: { pretrain: tiny-vit }"
                  sprintf "    dataset: { source: image_folder, path: \"%s\", val_fraction: 0.2 }" folder
                  "    methods: [lora]"; "    ranks: [2]"; "    epochs: 1"; "    batch: 8" ]
            File.WriteAllText(spec, pretrainBlock + String.concat "\n" lines + "\n")
            let code, out, err = dispatch [ "validate"; spec ]
            Expect.equal code 0 (out + err)
            let code, out, err = dispatch [ "run"; spec; "--results"; results ]
            Expect.equal code 0 (out + err)
            Expect.stringContains out "1 ran, 1 skipped" "the pretraining is reused, the tune runs"
            Expect.stringContains out "28x28x1" "the folder is read as the model takes it"
            Expect.stringContains out "input: the image folder is read as the model takes it: grey at 28 px" "and says so"
            let hash = hashOf results "folder/lora-r2"
            let card = RunCard.Read(Path.Combine(results, hash, RunCard.FileName))
            Expect.equal (card.InChans, card.InputSize) (1L, 28) "the card says 1 channel at 28 px"
            let image = Directory.GetFiles(Directory.GetDirectories(folder).[0]).[0]
            let json = predictJson [ "--run"; hash; "--results"; results; image ]
            Expect.equal json.Count 1 "an RGB 56-pixel image is predicted by the grey 28-pixel model"
        }

        test "transforms convert RGB to grey (channel mean) and grey to RGB" {
            use x = TorchSharp.torch.rand(2L, 3L, 4L, 4L)
            use g = Lora.Core.Data.Transforms(RgbToGrey = true).Apply(x, Random 0)
            Expect.sequenceEqual g.shape [| 2L; 1L; 4L; 4L |] "one channel"
            Expect.isTrue (g.allclose(x.mean([| 1L |], keepdim = true))) "the mean of the three"
            use back = Lora.Core.Data.Transforms(GreyToRgb = true).Apply(g, Random 0)
            Expect.sequenceEqual back.shape [| 2L; 3L; 4L; 4L |] "three channels again"
        }
    
        test "hashes mean the same experiment: a relative and an absolute path to one folder agree; changed data gives a new hash" {
            use dir = new TempDir()
            let folder = dir.File "shoes"
            for c in [ "a"; "b" ] do
                Directory.CreateDirectory(Path.Combine(folder, c)) |> ignore
                Lora.Core.Data.Png.Write(Path.Combine(folder, c, "0.png"), ReadOnlySpan<byte>(Array.create 16 (if c = "a" then 10uy else 200uy)), 1, 4, 4)
            Directory.CreateDirectory(dir.File "specs") |> ignore
            let spec (name: string) (path: string) =
                let file = Path.Combine(dir.File "specs", name)
                let data = sprintf "    dataset: { source: image_folder, path: \"%s\" }" path
                File.WriteAllText(file, String.concat "\n" [ "experiments:"; "  - name: e"; "    model: { zoo: vit, options: { img_size: 8, patch_size: 4 } }"; data; "    methods: [head]"; "" ])
                file
            let hash file =
                let code, out, err = dispatch [ "plan"; file; "--results"; dir.File "results"; "--json" ]
                Expect.equal code 0 err
                string (JsonNode.Parse(out).AsArray().[0].["hash"])
            let relative = hash (spec "relative.yaml" "../shoes")
            let absolute = hash (spec "absolute.yaml" folder)
            let dotted = hash (spec "dotted.yaml" (Path.Combine(folder, "..", "shoes")))
            Expect.equal relative absolute "../shoes from the spec's folder is the absolute path"
            Expect.equal dotted absolute "and so is a path with .. in it"
            Expect.equal (hash (spec "again.yaml" "../shoes")) relative "the same data, the same hash"
            // a new process would see the added image; this one caches folder fingerprints, so compare in a child
            Lora.Core.Data.Png.Write(Path.Combine(folder, "b", "1.png"), ReadOnlySpan<byte>(Array.create 16 99uy), 1, 4, 4)
            let si = Diagnostics.ProcessStartInfo("dotnet", RedirectStandardOutput = true, UseShellExecute = false)
            for a in [ Path.Combine(AppContext.BaseDirectory, "lora.dll"); "plan"; spec "relative.yaml" "../shoes"; "--results"; dir.File "results"; "--json" ] do si.ArgumentList.Add a
            use p = Diagnostics.Process.Start si
            let out = p.StandardOutput.ReadToEnd()
            p.WaitForExit()
            Expect.notEqual (string (JsonNode.Parse(out).AsArray().[0].["hash"])) relative "an added image gives a new run"
        }

        test "the installed Fashion-MNIST keeps its hashes: every committed quickstart result is found" {
            let code, out, err = dispatch [ "plan"; Path.Combine(repoRoot, "experiments", "quickstart.yaml"); "--results"; Path.Combine(repoRoot, "results"); "--json" ]
            Expect.equal code 0 err
            for r in JsonNode.Parse(out).AsArray() do
                Expect.equal (string r.["status"]) "done" (sprintf "%s is done" (string r.["name"]))
        }

        test "plan says which results were made at another commit" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let results = committedCopy dir
            let head = hashOf results "tiny/head"
            let metrics = Path.Combine(results, head, ResultsStore.MetricsFile)
            let o = JsonNode.Parse(File.ReadAllText metrics).AsObject()
            o.["provenance"].AsObject().["commit"] <- JsonValue.Create "0123456789abcdef0123456789abcdef01234567"
            File.WriteAllText(metrics, o.ToJsonString())
            let code, out, _ = dispatch [ "plan"; tinySpec; "--results"; results ]
            Expect.equal code 0 out
            let line = out.Split('\n') |> Array.find (fun l -> l.StartsWith head)
            if not (isNull (Provenance.GitCommit())) then Expect.stringContains line "done (made at commit 0123456)" "names the commit"
        }
    
        test "an ONNX model in a spec: onnx: PATH (YAML) and onnx \"PATH\" (F#) relative to the spec, hashed by content, run by lora run" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            for sub in [ "models"; "specs"; "elsewhere" ] do Directory.CreateDirectory(dir.File sub) |> ignore
            File.Copy(fixture "onnx/resnet_basic_op13.onnx", dir.File "models/net.onnx")
            File.Copy(fixture "onnx/resnet_basic_op13.onnx", dir.File "elsewhere/copy.onnx")
            let yaml (name: string) (path: string) =
                let file = dir.File("specs/" + name)
                let model = sprintf "    model: { onnx: \"%s\" }" path
                File.WriteAllText(file, String.concat "\n" [ "experiments:"; "  - name: onnx"; model
                                                             "    dataset: { source: fashion_mnist, classes: [0, 1], limit_train: 32, limit_val: 16 }"
                                                             "    methods: [head, { lora: { targets: [conv1] } }]"; "    ranks: [2]"; "    epochs: 1"; "    batch: 16"; "    image_size: 32"; "" ])
                file
            let fsx = dir.File "specs/net.fsx"
            File.WriteAllText(fsx, String.concat "\n" [ "let experiments ="
                                                        "    [ experiment {"
                                                        "          name \"onnx\""
                                                        "          model (onnx \"../models/net.onnx\")"
                                                        "          dataset (fashionMnist |> classes [ 0; 1 ] |> limit 32 16)"
                                                        "          methods [ head; Lora { LoraOptions.Defaults with Targets = [ \"conv1\" ] } ]"
                                                        "          ranks [ 2 ]"
                                                        "          epochs 1"
                                                        "          batch 16"
                                                        "          imageSize 32"
                                                        "      } ]"; "" ])
            let hashes file =
                let code, out, err = dispatch [ "plan"; file; "--results"; dir.File "results"; "--json" ]
                Expect.equal code 0 (out + err)
                [ for r in JsonNode.Parse(out).AsArray() -> string r.["name"], string r.["hash"] ]
            let relative = yaml "net.yaml" "../models/net.onnx"
            Expect.equal (hashes (yaml "moved.yaml" (dir.File "elsewhere/copy.onnx"))) (hashes relative) "the same graph elsewhere: the same runs"
            Expect.equal (hashes fsx) (hashes relative) "the F# builder gives the same runs"
            let code, out, err = dispatch [ "validate"; relative ]
            Expect.equal code 0 (out + err)
            let code, out, err = dispatch [ "run"; relative; "--results"; dir.File "results" ]
            Expect.equal code 0 (out + err)
            Expect.stringContains out "2 ran" "both runs trained"
            let card = RunCard.Read(Path.Combine(dir.File "results", hashOf (dir.File "results") "onnx/lora-r2", RunCard.FileName))
            Expect.equal card.Source "onnx" "the card says it is an imported graph"
            Expect.equal card.Model (dir.File "models/net.onnx") "at its full path"
            let code, _, err = dispatch [ "validate"; yaml "missing.yaml" "../models/none.onnx" ]
            Expect.equal code 2 "a missing file is a validate error"
            Expect.stringContains err "ONNX file not found at '../models/none.onnx'" "named as written"
            Expect.stringContains err "missing.yaml:3:" "and located"
        }
    
        test "eval --run on the run's own validation view reproduces its final metrics; --json/--out save them; a YAML dataset entry works too" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            let results = tinyResults.Force()
            use dir = new TempDir()
            for id in [ "tiny/lora-r2"; "tiny/adapter-r2" ] do
                let hash = hashOf results id
                let committed = JsonNode.Parse(File.ReadAllText(Path.Combine(results, hash, ResultsStore.MetricsFile))).["metrics"]
                let out = dir.File(hash + ".json")
                let code, stdout, err = dispatch [ "eval"; "--run"; hash; "--results"; results; "--dataset"; "fashion-mnist"; "--classes"; "5,6,7,8,9"; "--limit"; "50"; "--json"; "--out"; out ]
                Expect.equal code 0 err
                let printed = JsonNode.Parse stdout
                Expect.equal (printed.ToJsonString()) (JsonNode.Parse(File.ReadAllText out).ToJsonString()) "--out holds what --json prints"
                Expect.equal (int printed.["count"]) 50 "50 images"
                Expect.equal (float printed.["metrics"].["accuracy"]) (float committed.["accuracy"]) (id + ": the run's validation accuracy, exactly")
                Expect.floatClose Accuracy.medium (float printed.["metrics"].["loss"]) (float committed.["loss"]) (id + ": and its loss")
            let snippet = dir.File "data.yaml"
            File.WriteAllText(snippet, "source: fashion_mnist\nclasses: [5, 6, 7, 8, 9]\nlimit_val: 50\n")
            let lora = hashOf results "tiny/lora-r2"
            let code, stdout, err = dispatch [ "eval"; "--run"; lora; "--results"; results; "--dataset"; snippet ]
            Expect.equal code 0 err
            Expect.stringContains stdout "accuracy" "prints the metrics"
            Expect.stringContains stdout "50 images" "on the same view"
            let code, _, err = dispatch [ "eval"; "--run"; lora; "--results"; results; "--dataset"; "fashon_mnist" ]
            Expect.equal code 2 "a misspelt source is bad input"
            Expect.stringContains err "did you mean fashion_mnist" "with a suggestion"
            let code, _, err = dispatch [ "eval"; "--run"; lora; "--results"; results; "--dataset"; "fashion_mnist"; "--classes"; "5,6" ]
            Expect.equal code 2 "a class count the head cannot take"
            Expect.stringContains err "predicts 5 classes" "says so"
        }
    ]
