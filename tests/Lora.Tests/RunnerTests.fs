module Lora.Tests.RunnerTests

open System
open System.Collections.Concurrent
open System.IO
open System.Text.Json.Nodes
open System.Threading
open Expecto
open Lora.Dsl
open Lora.CommandLine
open Lora.Runner
open Lora.Core.IO
open Lora.Tests.Generators

/// Writes plausible metrics without training: accuracy from the hash, a short decreasing loss curve,
/// a fake checkpoint in the artifacts folder (and checks the base's checkpoint is there for tunes).
type FakeExecutor(?fail: string list, ?delayMs: int, ?calls: ConcurrentQueue<string>) =
    let calls = defaultArg calls (ConcurrentQueue<string>())
    member _.Calls = List.ofSeq calls
    interface IRunExecutor with
        member _.Execute(run, ctx, ct) =
            calls.Enqueue run.Id
            delayMs |> Option.iter (fun (ms: int) -> Thread.Sleep ms)
            if defaultArg fail [] |> List.contains run.Id then failwithf "fake failure of %s" run.Id
            if not (isNull run.DependsOn) then
                if not (File.Exists(Path.Combine(ctx.BaseArtifactsDir, "model.safetensors"))) then failwith "the base run's checkpoint is missing"
            File.WriteAllText(Path.Combine(ctx.ArtifactsDir, "model.safetensors"), "fake " + run.Hash)
            ctx.Log.Invoke "epoch 1 done"
            let h = Convert.ToInt32(run.Hash.Substring(0, 4), 16)
            let acc = 0.5 + float (h % 4000) / 10000.0
            RunResult(
                Metrics = readOnlyDict [ "accuracy", acc; "loss", 1.0 - acc ],
                Curve = [| for s in 1..3 -> CurvePoint(s, int64 (10 * s), 2.0 / float s, Nullable(2.1 / float s), Nullable(acc * float s / 3.0)) |],
                TotalParams = 100000L,
                TrainableParams = int64 (1000 + run.Spec.RankValue * 100),
                TrainSeconds = float (h % 100) / 10.0,
                PeakMemoryBytes = Nullable(int64 (50 + h % 50) * 1048576L))

/// The quickstart spec with Fashion-MNIST pointed at an existing folder (so the tests do not need the package).
let quickstartIn (dir: TempDir) =
    // one seed: these tests count and name the runs of one seed
    let text = File.ReadAllText(Path.Combine(repoRoot, "experiments", "quickstart.yaml")).Replace("seeds: [0, 1, 2]", "seed: 0")
    let data = Directory.CreateDirectory(dir.File "fmnist").FullName
    let spec = dir.File "quickstart.yaml"
    File.WriteAllText(spec, text.Replace("      source: fashion_mnist", sprintf "      source: fashion_mnist\n      path: \"%s\"" data))
    spec

let runOpts spec results =
    { Specs = [ spec ]; Results = results; Device = null; Only = null; ShardIndex = 0; ShardCount = 1; Force = false; Tables = null; Verify = false }

let run (o: RunOptions) (ex: IRunExecutor) =
    use out = new StringWriter()
    use err = new StringWriter()
    let code = Commands.RunCommand(o, ex, "lora run test", out, err)
    code, out.ToString() + err.ToString()

let planJson spec results =
    use out = new StringWriter()
    use err = new StringWriter()
    let code = Commands.PlanCommand({ Spec = spec; Results = results; Json = true }, out, err)
    Expect.equal code 0 (err.ToString())
    JsonNode.Parse(out.ToString()).AsArray() |> Seq.map (fun n -> n.AsObject()) |> List.ofSeq

let allFiles (dir: string) = if Directory.Exists dir then Directory.GetFiles(dir, "*", SearchOption.AllDirectories) |> List.ofArray else []

let runTests =
    testList "run" [
        test "several specs make one plan: the README's main job runs the quickstart and the ImageNet ResNet-18 spec in one command" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let text = File.ReadAllText(Path.Combine(repoRoot, "experiments", "imagenet-resnet18.yaml"))
            let second = dir.File "imagenet-resnet18.yaml"
            File.WriteAllText(second, text.Replace("      source: fashion_mnist", sprintf "      source: fashion_mnist\n      path: \"%s\"" (dir.File "fmnist")))
            let results = dir.File "results"
            let ex = FakeExecutor()
            let code, log = run { runOpts spec results with Specs = [ spec; second ] } ex
            Expect.equal code 0 log
            Expect.equal ex.Calls.Length 17 "11 quickstart runs and 6 ResNet-18 runs"
            Expect.isTrue (ex.Calls |> List.exists (fun c -> c = "imagenet-resnet18/lora-r4")) "the second spec's runs ran"
            let code, log = run { runOpts spec results with Specs = [ spec; dir.File "missing.yaml" ] } ex
            Expect.equal code 2 "a bad second spec stops the command before anything runs"
            Expect.equal ex.Calls.Length 17 "nothing more ran"
        }
        test "runs every run in dependency order, writes metrics, then skips them all" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let ex = FakeExecutor()
            let code, log = run (runOpts spec results) ex
            Expect.equal code 0 log
            Expect.equal ex.Calls.Length 11 "11 runs"
            Expect.equal ex.Calls.Head "pretrain/vit-fmnist-0-4" "the pretrain step first"
            let plan = planJson spec results
            Expect.equal (plan |> List.map (fun o -> string o.["status"])) (List.replicate 11 "done") "all done"
            let pre = string plan.Head.["hash"]
            Expect.equal (plan.Tail |> List.map (fun o -> string o.["dependsOn"]) |> List.distinct) [ pre ] "tunes depend on the pretrain"
            for o in plan do Expect.isTrue (File.Exists(Path.Combine(results, string o.["hash"], "metrics.json"))) "metrics.json"
            let m = JsonNode.Parse(File.ReadAllText(Path.Combine(results, string plan.[3].["hash"], "metrics.json")))
            Expect.equal (string m.["id"]) "quickstart/lora-r4" "id"
            Expect.equal (string m.["config"].["method"].["kind"]) "lora" "config"
            Expect.equal (m.["config"].["method"].["alpha"].GetValue<float>()) 8.0 "resolved alpha"
            Expect.equal (string m.["provenance"].["command"]) "lora run test" "command line"
            Expect.isNotNull m.["provenance"].["packages"].["TorchSharp"] "package versions"
            let numerics = m.["provenance"].["numerics"]
            Expect.equal (numerics.["intra_op_threads"].GetValue<int>()) (TorchSharp.torch.get_num_threads()) "the intra-op thread count"
            Expect.isNotEmpty (string numerics.["cpu"]) "the processor"
            Expect.isTrue (numerics.AsObject().ContainsKey "onednn_max_cpu_isa") "a user's oneDNN cap (null: none)"
            if OperatingSystem.IsLinux() && Runtime.InteropServices.RuntimeInformation.ProcessArchitecture = Runtime.InteropServices.Architecture.X64 then
                Expect.contains [ "avx512"; "avx2"; "sse4.1" ] (string numerics.["cpu_isa"]) "the widest vector instructions"
            Expect.equal (m.["curve"].AsArray().Count) 3 "curve"
            Expect.equal (m.["params"].["trainable"].GetValue<int64>()) 1400L "params"
            // the committed folder holds small text only; binaries sit beside it
            Expect.isTrue (File.Exists(Path.Combine(dir.File "results-artifacts", pre, "model.safetensors"))) "checkpoint beside results"
            Expect.equal (allFiles results |> List.map Path.GetFileName |> List.distinct) [ "metrics.json" ] "only metrics.json in results (no temp or lock files)"
            let code2, log2 = run (runOpts spec results) ex
            Expect.equal code2 0 log2
            Expect.equal ex.Calls.Length 11 "nothing ran again"
            Expect.stringContains log2 "0 ran, 11 skipped" "summary"
        }
        test "--only selects runs and adds the pretrain they need" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let ex = FakeExecutor()
            let code, log = run { runOpts spec (dir.File "results") with Only = "quickstart/lora-*" } ex
            Expect.equal code 0 log
            Expect.equal ex.Calls [ "pretrain/vit-fmnist-0-4"; "quickstart/lora-r4"; "quickstart/lora-r8" ] "calls"
            let code, log = run { runOpts spec (dir.File "results") with Only = "nothing-*" } ex
            Expect.equal code 2 "no match is an error"
            Expect.stringContains log "matches no run" "message"
        }
        test "--shard I/N splits the runs; a shard whose base is missing reports blocked runs" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let early = FakeExecutor()
            let code, log = run { runOpts spec results with ShardIndex = 1; ShardCount = 2 } early
            Expect.equal code 1 "blocked runs fail the command"
            Expect.equal early.Calls [] "nothing could run before the pretrain"
            Expect.stringContains log "0 ran, 0 skipped, 0 failed, 5 blocked" "summary"
            let s0 = FakeExecutor()
            Expect.equal (fst (run { runOpts spec results with ShardIndex = 0; ShardCount = 2 } s0)) 0 "shard 0"
            let s1 = FakeExecutor()
            Expect.equal (fst (run { runOpts spec results with ShardIndex = 1; ShardCount = 2 } s1)) 0 "shard 1"
            Expect.equal (s0.Calls.Length, s1.Calls.Length) (6, 5) "interleaved halves"
            Expect.equal (s0.Calls @ s1.Calls |> List.distinct |> List.length) 11 "together every run, once"
            Expect.equal s0.Calls.Head "pretrain/vit-fmnist-0-4" "the pretrain is in shard 0"
        }
        test "--force reruns a done run" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            run (runOpts spec results) (FakeExecutor()) |> ignore
            let ex = FakeExecutor()
            let code, _ = run { runOpts spec results with Only = "quickstart/full"; Force = true } ex
            Expect.equal code 0 "ok"
            Expect.equal ex.Calls [ "quickstart/full" ] "only the selected run (its base is done)"
        }
        test "a failed run leaves no result, shows as failed, and reruns next time" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let code, log = run (runOpts spec results) (FakeExecutor(fail = [ "quickstart/dora-r4" ]))
            Expect.equal code 1 "a failure fails the command"
            Expect.stringContains log "fake failure of quickstart/dora-r4" "the reason"
            let plan = planJson spec results
            let dora = plan |> List.find (fun o -> string o.["name"] = "quickstart/dora-r4")
            let hash = string dora.["hash"]
            Expect.equal (string dora.["status"]) "failed" "status"
            Expect.isFalse (File.Exists(Path.Combine(results, hash, "metrics.json"))) "no result"
            Expect.stringContains (File.ReadAllText(Path.Combine(dir.File "results-artifacts", hash, "failed.txt"))) "fake failure" "failure note"
            Expect.equal (plan |> List.filter (fun o -> string o.["status"] = "done") |> List.length) 10 "the others are done"
            let ex = FakeExecutor()
            Expect.equal (fst (run (runOpts spec results) ex)) 0 "rerun"
            Expect.equal ex.Calls [ "quickstart/dora-r4" ] "only the failed run"
            Expect.isFalse (File.Exists(Path.Combine(dir.File "results-artifacts", hash, "failed.txt"))) "failure note gone"
        }
        test "a claimed run is left to its runner" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let store = ResultsStore(results)
            run { runOpts spec results with Only = "pretrain/*" } (FakeExecutor()) |> ignore
            let lora = planJson spec results |> List.find (fun o -> string o.["name"] = "quickstart/lora-r4")
            let hash = string lora.["hash"]
            let ex = FakeExecutor()
            do
                use claim = store.TryClaim hash
                Expect.isNotNull claim "claimed"
                Expect.isNull (store.TryClaim hash) "a second claim fails"
                Expect.isTrue (store.IsClaimed hash) "seen as claimed"
                Expect.equal (string (planJson spec results |> List.find (fun o -> string o.["hash"] = hash)).["status"]) "running" "plan says running"
                let code, log = run (runOpts spec results) ex
                Expect.equal code 0 log
                Expect.stringContains log (sprintf "claimed  %s" hash) "reported"
                Expect.isFalse (ex.Calls |> List.contains "quickstart/lora-r4") "not run twice"
            Expect.isFalse (File.Exists(Path.Combine(results, hash, "run.lock"))) "released claims leave no lock file"
            let ex2 = FakeExecutor()
            run (runOpts spec results) ex2 |> ignore
            Expect.equal ex2.Calls [ "quickstart/lora-r4" ] "runs once released"
        }
        test "two runners on one folder never run the same job twice" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let calls = ConcurrentQueue<string>()
            let go () = run (runOpts spec results) (FakeExecutor(delayMs = 40, calls = calls)) |> ignore
            let threads = [ for _ in 1..2 -> Thread(go) ]
            threads |> List.iter (fun t -> t.Start())
            threads |> List.iter (fun t -> t.Join())
            let first = List.ofSeq calls
            Expect.equal (List.distinct first) first "no run executed twice"
            run (runOpts spec results) (FakeExecutor(calls = calls)) |> ignore
            let all = List.ofSeq calls
            Expect.equal (List.distinct all) all "still none twice"
            Expect.equal all.Length 11 "every run exactly once"
        }
        test "atomic writes leave the old file or nothing, never a partial one" {
            use dir = new TempDir()
            let path = dir.File "sub/metrics.json"
            Expect.throwsT<IOException> (fun () ->
                AtomicFile.Write(path, fun s -> s.Write([| 1uy; 2uy |], 0, 2); raise (IOException "disk full"))) "the error passes through"
            Expect.isFalse (File.Exists path) "no file"
            Expect.equal (allFiles (dir.File "sub")) [] "no temp file left"
            AtomicFile.WriteAllText(path, "old")
            Expect.throwsT<IOException> (fun () -> AtomicFile.Write(path, fun s -> s.WriteByte 1uy; raise (IOException "disk full"))) "again"
            Expect.equal (File.ReadAllText path) "old" "old content intact"
            Expect.equal (allFiles (dir.File "sub") |> List.map Path.GetFileName) [ "metrics.json" ] "still no temp file"
            File.WriteAllText(dir.File "sub/.metrics.json.tmp-dead", "partial")
            // a writer killed inside a subfolder (a run's adapter/) leaves its temp file there
            Directory.CreateDirectory(dir.File "sub/adapter") |> ignore
            File.WriteAllText(dir.File "sub/adapter/.adapter_model.safetensors.tmp-dead", "partial")
            AtomicFile.CleanStaleTemps(dir.File "sub")
            Expect.equal (allFiles (dir.File "sub") |> List.map Path.GetFileName) [ "metrics.json" ] "a killed writer's temp files are cleaned, in subfolders too"
        }
        test "dispatcher: stubs, bad specs and usage errors" {
            use out = new StringWriter()
            use err = new StringWriter()
            let d (args: string[]) = Commands.Dispatch(args, (fun () -> FakeExecutor() :> IRunExecutor), out, err)
            // bench itself is tested in BenchTests; here only that the dispatcher reaches it
            Expect.equal (d [| "bench"; "--model"; "vit"; "--methods"; "nope" |]) 2 "bench: bad method"
            Expect.stringContains (err.ToString()) "lora bench: --methods: unknown method(s) nope" "bench's message"
            Expect.equal (d [| "run"; "nowhere.yaml" |]) 2 "missing spec"
            Expect.equal (d [| "plan" |]) 2 "usage error"
            Expect.equal (d [| "version" |]) 2 "version is --version"
            Expect.equal (d [| "--version" |]) 0 "version"
        }
    ]

// ------------------------------------------------------------------ tables

/// A metrics.json written by hand, for table layouts.
let writeResult (results: string) (hash: string) (experiment: string) (name: string) (methodName: string) (rank: int) (model: string) (zoo: string)
                (dataset: string) (task: string) (metrics: (string * float) list) (peak: int64 option) =
    let q (x: string) = Text.Json.JsonSerializer.Serialize x
    let metricsJson = metrics |> List.map (fun (k, v) -> sprintf "%s: %s" (q k) (v.ToString("R", Globalization.CultureInfo.InvariantCulture))) |> String.concat ", "
    let text =
        sprintf """{"hash": %s, "id": "e/n", "labels": {"kind": "tuning", "experiment": %s, "name": %s, "method": %s, "rank": %d, "model": %s, "zoo": %s, "dataset": %s, "task": %s, "seed": 0},
 "metrics": {%s}, "params": {"total": 1000, "trainable": %d}, "timings": {"train_seconds": 1.25}, "peak_memory_bytes": %s, "curve": []}"""
            (q hash) (q experiment) (q name) (q methodName) rank (q model) (q zoo) (q dataset) (q task) metricsJson (10 * (rank + 1))
            (match peak with Some p -> string p | None -> "null")
    Directory.CreateDirectory(Path.Combine(results, hash)) |> ignore
    File.WriteAllText(Path.Combine(results, hash, "metrics.json"), text)

let tableTests =
    testList "tables" [
        test "quickstart table from a fake run; regeneration is byte-identical (markdown and PNG)" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            run (runOpts spec results) (FakeExecutor()) |> ignore
            let store = ResultsStore(results)
            let out1 = dir.File "tables1"
            let files = Tables.Generate(store, out1)
            Expect.equal (files |> Seq.map Path.GetFileName |> List.ofSeq) [ "quickstart-loss.png"; "quickstart-metric.png"; "quickstart.md"; "parameters.md" ] "files"
            let md = File.ReadAllLines(Path.Combine(out1, "quickstart.md"))
            Expect.equal md.[2] "| method | rank | trainable params | accuracy | train time | peak memory |" "header"
            let rows = md |> Array.filter (fun l -> l.StartsWith "| " && not (l.StartsWith "| method") && not (l.StartsWith "| ---")) |> Array.map (fun l -> l.Split('|').[1].Trim(), l.Split('|').[2].Trim())
            Expect.equal rows [| "full", "—"; "head", "—"; "lora", "4"; "lora", "8"; "dora", "4"; "dora", "8"; "adalora", "4"; "adalora", "8"; "adapter", "4"; "adapter", "8" |] "one row per tune"
            Expect.isTrue (md |> Array.exists (fun l -> l.StartsWith "| lora | 4 | 1,400 | " && l.Contains "% | " && l.EndsWith " MiB |")) "formatted numbers"
            Expect.contains md "![loss per mode](curves/quickstart-loss.png)" "curves linked"
            let snapshot d = allFiles d |> List.map (fun f -> Path.GetRelativePath(d, f), File.ReadAllBytes f) |> List.sortBy fst
            let before = snapshot out1
            let stamps = allFiles out1 |> List.map File.GetLastWriteTimeUtc
            Tables.Generate(store, out1) |> ignore
            Expect.equal (snapshot out1) before "same bytes"
            Expect.equal (allFiles out1 |> List.map File.GetLastWriteTimeUtc) stamps "unchanged files are not rewritten"
            let out2 = dir.File "tables2"
            Tables.Generate(store, out2) |> ignore
            Expect.equal (snapshot out2) before "a fresh regeneration (PNG rendering included) gives the same bytes"
            let png = File.ReadAllBytes(Path.Combine(out1, "curves", "quickstart-loss.png"))
            Expect.equal png.[1..3] "PNG"B "a PNG"
        }
        test "missing values show as —" {
            use dir = new TempDir()
            let results = dir.File "results"
            writeResult results "aaaa" "e" "lora-r4" "lora" 4 "vit" "vit" "fashion_mnist" "classification" [] None
            Tables.Generate(ResultsStore(results), dir.File "t") |> ignore
            let md = File.ReadAllLines(Path.Combine(dir.File "t", "e.md"))
            Expect.contains md "| lora | 4 | 50 | — | 1.2 s | — |" "row"
        }
        test "ModelScope table: datasets × backbones with an Average row" {
            use dir = new TempDir()
            let results = dir.File "results"
            writeResult results "a1" "ms" "lora-r8-vit_b-cifar" "lora" 8 "vit_b" "vit" "cifar" "classification" [ "accuracy", 0.9 ] None
            writeResult results "a2" "ms" "lora-r8-vit_b-flowers" "lora" 8 "vit_b" "vit" "flowers" "classification" [ "accuracy", 0.8 ] None
            writeResult results "a3" "ms" "lora-r8-vit_s-cifar" "lora" 8 "vit_s" "vit" "cifar" "classification" [ "accuracy", 0.7 ] None
            Tables.Generate(ResultsStore(results), dir.File "t") |> ignore
            let md = File.ReadAllText(Path.Combine(dir.File "t", "accuracy.md"))
            let expected =
                "# Accuracy per dataset and backbone\n\n## ms: lora r8\n\n| dataset | vit_b | vit_s |\n| --- | ---: | ---: |\n"
                + "| cifar | 90.00% | 70.00% |\n| flowers | 80.00% | — |\n| Average | 85.00% | — |\n"
            Expect.equal md expected "table"
        }
        test "Medical-SAM-Adapter table and parameter summary" {
            use dir = new TempDir()
            let results = dir.File "results"
            writeResult results "b1" "seg" "adapter-r4" "adapter" 4 "sam_vit" "sam_vit" "composed_segmentation" "segmentation" [ "dice", 0.8123; "miou", 0.7 ] (Some 104857600L)
            writeResult results "b2" "seg" "lora-r4" "lora" 4 "sam_tiny_vit" "sam_tiny_vit" "composed_segmentation" "segmentation" [ "dice", 0.75 ] None
            Tables.Generate(ResultsStore(results), dir.File "t") |> ignore
            let md = File.ReadAllText(Path.Combine(dir.File "t", "seg.md"))
            Expect.equal md
                ("# seg\n\n| Baseline | Backbone | mode | DICE | mIoU | Memory |\n| --- | --- | --- | ---: | ---: | ---: |\n"
                 + "| sam_tiny_vit | TinyViT | LoRA r4 | 0.7500 | — | — |\n| sam_vit | ViT | Adapter r4 | 0.8123 | 0.7000 | 100.0 MiB |\n") "segmentation table"
            let p = File.ReadAllLines(Path.Combine(dir.File "t", "parameters.md"))
            Expect.equal p.[2] "| model | method | rank | total | trainable | non-trainable |" "header"
            Expect.contains p "| sam_vit | adapter | 4 | 1,000 | 50 | 950 |" "row"
        }
    ]

/// A SAM small enough to train in seconds: the options of its spec, and the same as --model-config JSON.
let private samOptions =
    [ "img_size", "32"; "in_chans", "1"; "patch_size", "8"; "embed_dim", "32"; "depth", "2"; "num_heads", "2"; "window_size", "0"
      "out_chans", "32"; "decoder_depth", "1"; "decoder_num_heads", "2"; "decoder_mlp_dim", "32"; "iou_head_hidden_dim", "16"; "mask_in_chans", "4" ]

let private samSpec =
    let options = samOptions |> List.map (fun (k, v) -> $"{k}: {v}") |> String.concat ", "
    let data classes = $"{{ source: composed_segmentation, canvas: 48, objects: 1, classes: {classes}, limit_train: 32, limit_val: 16 }}"
    $"""pretrain:
  - name: sam-tiny
    task: segmentation
    model: {{ zoo: sam_vit, options: {{ {options} }} }}
    dataset: {data "[0, 1, 2, 3, 4]"}
    epochs: 1
    batch: 16
    lr: 0.003
experiments:
  - name: sam-tiny
    task: segmentation
    model: {{ pretrain: sam-tiny }}
    dataset: {data "[5, 6, 7, 8, 9]"}
    methods: [{{ lora: {{ targets: [qkv] }} }}]
    ranks: [2]
    epochs: 1
    batch: 16
    lr: 0.003
"""

let private samRunTests =
    testList "SAM run" [
        test "a SAM LoRA run keeps its trained mask decoder in the adapter, and `lora merge` rebuilds the tuned model from the artifacts" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let spec = dir.File "sam.yaml"
            File.WriteAllText(spec, samSpec)
            let results = dir.File "results"
            let code, log = run (runOpts spec results) (TrainingExecutor())
            Expect.equal code 0 log
            let plan = planJson spec results
            let artifacts (o: JsonObject) = Path.Combine(dir.File "results-artifacts", string o.["hash"])
            let pre, tune = artifacts plan.[0], artifacts plan.[1]
            let adapter = Path.Combine(tune, TrainingExecutor.AdapterFolder)
            Expect.isFalse (File.Exists(Path.Combine(tune, TrainingExecutor.ModelFile))) "no whole-model copy: the adapter holds what trained"
            let config = JsonNode.Parse(File.ReadAllText(Path.Combine(adapter, "adapter_config.json")))
            Expect.equal [ for n in config.["modules_to_save"].AsArray() -> string n ] [ "mask_decoder" ] "the spec's `head` is SAM's mask decoder"
            let baseWeights = Path.Combine(pre, TrainingExecutor.ModelFile)
            let adapterFile = Path.Combine(adapter, "adapter_model.safetensors")
            let decoderKeys = Safetensors.ReadHeader(baseWeights).Entries |> Seq.map (fun e -> e.Name) |> Seq.filter (fun k -> k.StartsWith "mask_decoder.") |> Set.ofSeq
            let adapterKeys = Safetensors.ReadHeader(adapterFile).Entries |> Seq.map (fun e -> e.Name) |> Set.ofSeq
            Expect.isNonEmpty decoderKeys "the decoder has parameters"
            for k in decoderKeys do Expect.contains adapterKeys ("base_model.model." + k) $"{k} in the adapter"
            // merge from the artifacts alone, then compare with base + adapter unmerged
            let json = dir.File "sam.json"
            File.WriteAllText(json, "{" + (samOptions |> List.map (fun (k, v) -> $"\"{k}\": {v}") |> String.concat ", ") + "}")
            let merged = dir.File "merged.safetensors"
            use out = new StringWriter()
            use err = new StringWriter()
            let mcode = Commands.Dispatch([| "merge"; "--model"; "sam_vit"; "--model-config"; json; "--weights"; baseWeights; "--adapter"; adapter; "--out"; merged |],
                                          (fun () -> TrainingExecutor() :> IRunExecutor), out, err)
            Expect.equal mcode 0 (err.ToString())
            let args = Lora.Core.Models.ModelArgs.FromFile json
            use plain = Lora.Core.Models.Zoo.Create("sam_vit", args)
            StateDict.Load(plain, merged, strict = true) |> ignore
            use tuned = Lora.Core.Models.Zoo.Create("sam_vit", args)
            StateDict.Load(tuned, baseWeights, strict = true) |> ignore
            let before = tuned.state_dict() |> Seq.map (fun kv -> kv.Key, kv.Value.clone()) |> Map.ofSeq
            Lora.Core.Tuning.AdapterCheckpoint.Load(tuned, adapter) |> ignore
            let after = plain.state_dict()
            let saved = Safetensors.Load adapterFile
            let differ (a: TorchSharp.torch.Tensor) (b: TorchSharp.torch.Tensor) = (a - b).abs().max().item<float32>() > 0.0f
            Expect.isTrue (decoderKeys |> Seq.exists (fun k -> differ after.[k] before.[k])) "the decoder trained"
            for k in decoderKeys do Expect.isFalse (differ after.[k] saved.["base_model.model." + k]) $"{k}: merged = adapter"
            Expect.isTrue (differ after.["image_encoder.blocks.0.attn.qkv.weight"] before.["image_encoder.blocks.0.attn.qkv.weight"]) "LoRA merged into qkv"
            plain.eval (); tuned.eval ()
            use _ = TorchSharp.torch.no_grad ()
            use x = TorchSharp.torch.rand(2L, 1L, 32L, 32L)
            use ym = plain.call x
            use yt = tuned.call x
            let gap = (ym - yt).abs().max().item<float32>() |> float
            Expect.isLessThan gap 1e-4 "merged masks = base + adapter masks"
        }
    ]

/// Class selections an image folder cannot satisfy: validation cannot count its classes (only the
/// folder can), so the run's data loading reports them, naming the folder and the valid range.
let dataTests =
    testList "run data" [
        test "an image folder: a class beyond its folders, and too many shots, name the folder and the range" {
            use dir = new TempDir()
            let root = dir.File "pets"
            let n = 9
            let set = Lora.Core.Data.ImageDataset(Array.init (n * 16) byte, Array.init n (fun i -> i % 3), 1, 4, 4, [| "cat"; "dog"; "fox" |])
            Lora.Core.Data.ImageFolder.Write(set, root)
            let folders = Directory.GetDirectories root |> Array.map Path.GetFileName |> Array.sort
            Expect.equal folders.Length 3 "one folder per class"
            let load view = RunData.Load(view, Classification, Nullable 4)
            let ok = load (imageFolder root |> classes [ 2; 0 ])
            Expect.equal ok.Train.NumClasses 2 "an in-range selection loads"
            let e = Expect.throwsC (fun () -> load (imageFolder root |> classes [ 0; 5 ]) |> ignore) id
            Expect.isTrue (e :? InvalidDataException) (sprintf "InvalidDataException, got %s" (e.GetType().Name))
            Expect.equal e.Message
                (sprintf "image folder '%s' has 3 classes (0-2: %s): class 5 in classes [0, 5] is outside them; choose classes in 0-2." root
                    (String.Join(", ", folders)))
                "names the folder, the value and the valid range"
            let e = Expect.throwsC (fun () -> load (imageFolder root |> shots 4) |> ignore) id
            Expect.isTrue (e :? InvalidDataException) "InvalidDataException"
            Expect.stringStarts e.Message (sprintf "image folder '%s': shots 4: class '%s' has only 3 images" root folders.[0]) "names the folder and the class"
        }
    ]

let tests = testList "Runner" [ runTests; tableTests; samRunTests; dataTests ]
