/// The run record (results/<hash>/metrics.json): one type, one serialiser, strict on reading.
module Lora.Tests.ResultsTests

open System
open System.IO
open Expecto
open FsCheck
open FsCheck.FSharp
open Lora.Runner
open Lora.Dsl
open Lora.Tests.Generators

let private committed () =
    Directory.GetDirectories(Path.Combine(repoRoot, "results"))
    |> Array.map (fun d -> Path.Combine(d, ResultsStore.MetricsFile))
    |> Array.filter File.Exists
    |> Array.sort

let recordTests =
    testList "run record" [
        test "every committed metrics.json reads as a record and writes back byte-identically" {
            let files = committed ()
            Expect.isNonEmpty files "results/ has records"
            for f in files do
                let text = File.ReadAllText f
                let r = RunRecordJson.Read(text, f)
                Expect.equal (RunRecordJson.Write r) text $"{f} round-trips"
        }
        test "a missing required field, a null label and an unknown field are errors naming the file" {
            let text = File.ReadAllText(committed () |> Array.head)
            let check (bad: string) (parts: string list) =
                let e = Expect.throwsC (fun () -> RunRecordJson.Read(bad, "results/x/metrics.json") |> ignore) id
                for p in parts do Expect.stringContains e.Message p $"message names {p}: {e.Message}"
                Expect.isTrue (e :? InvalidDataException) "InvalidDataException"
            check (Text.RegularExpressions.Regex.Replace(text, "\"params\": \\{[^}]*\\},", "")) [ "results/x/metrics.json"; "params" ]
            check (text.Replace("\"kind\": \"tuning\"", "\"kind\": null").Replace("\"kind\": \"pretraining\"", "\"kind\": null")) [ "results/x/metrics.json"; "kind" ]
            check (text.Replace("\"hash\":", "\"colour\": 1, \"hash\":")) [ "results/x/metrics.json"; "colour" ]
            check "{" [ "results/x/metrics.json" ]
        }
        test "lora tables on a results folder with a broken record fails naming the file" {
            use dir = new TempDir()
            let d = dir.File "results/abc"
            Directory.CreateDirectory d |> ignore
            File.WriteAllText(Path.Combine(d, "metrics.json"), """{"hash": "abc"}""")
            let code, _, err = runLora [ "tables"; "--results"; dir.File "results"; "--out"; dir.File "t" ]
            Expect.equal code 1 err
            Expect.stringContains err (Path.Combine(d, "metrics.json")) "names the file"
        }
        test "optional fields added later are omitted when unset and read back when set" {
            let f = committed () |> Array.head
            let r = RunRecordJson.ReadFile f
            let text = RunRecordJson.Write r
            Expect.isFalse (text.Contains "selected_epoch") "unset: not written"
            let withSelection = text.Substring(0, text.Length - 3) + ",\n  \"selected_epoch\": 2,\n  \"selection\": \"best val accuracy\"\n}\n"
            let back = RunRecordJson.Read(withSelection, "x")
            Expect.equal (RunRecordJson.Write back) withSelection "written back as read"
            Expect.equal back.SelectedEpoch (Nullable 2) "selected epoch"
            Expect.equal back.Selection "best val accuracy" "selection"
        }
    ]

let levelTests =
    testList "dependency levels" [
        test "one computation: levels, an outside dependency is no edge, a cycle names a run" {
            let runs = [| "a", [ "zz" ]; "b", [ "a" ]; "c", [ "b"; "a" ]; "d", [] |]
            let levels = DependencyLevels.Of(runs, fst, (fun r -> Seq.ofList (snd r)), fst)
            Expect.equal levels [| 0; 1; 2; 0 |] "levels"
            let cyclic = [| "a", [ "b" ]; "b", [ "a" ] |]
            let e = Expect.throwsC (fun () -> DependencyLevels.Of(cyclic, fst, (fun r -> Seq.ofList (snd r)), fst) |> ignore) id
            Expect.stringContains e.Message "cycle" "cycle"
        }
    ]

/// A synthetic record (no training): one seed of one variant.
let writeSeed (results: string) (experiment: string) (variant: string) (methodName: string) (rank: int) (seed: int) (metrics: (string * float) list) =
    let q (x: string) = Text.Json.JsonSerializer.Serialize x
    let num (v: float) = v.ToString("R", Globalization.CultureInfo.InvariantCulture)
    let hash = sprintf "%s-%s-%d" experiment variant seed
    let name = sprintf "%s-s%d" variant seed
    let m = metrics |> List.map (fun (k, v) -> sprintf "%s: %s" (q k) (num v)) |> String.concat ", "
    let text =
        sprintf """{"hash": %s, "id": %s, "labels": {"kind": "tuning", "experiment": %s, "name": %s, "method": %s, "rank": %d, "model": "vit", "zoo": "vit", "dataset": "fmnist", "task": "classification", "seed": %d},
 "metrics": {%s}, "params": {"total": 1000, "trainable": %d}, "timings": {"train_seconds": 2.0}, "peak_memory_bytes": 1048576,
 "curve": [{"epoch": 0, "step": 0, "train_loss": 2.0}, {"epoch": 1, "step": 10, "train_loss": 1.0, "val_metric": %s}]}"""
            (q hash) (q (experiment + "/" + name)) (q experiment) (q name) (q methodName) rank seed m (10 * (rank + 1))
            (num (metrics |> List.tryFind (fun (k, _) -> k = "accuracy") |> Option.map snd |> Option.defaultValue 0.5))
    Directory.CreateDirectory(Path.Combine(results, hash)) |> ignore
    File.WriteAllText(Path.Combine(results, hash, "metrics.json"), text)

/// lora-r4 beats full by 10 points on every seed; dora-r4 has only two seeds.
let private threeSeeds (results: string) =
    for s, acc in [ 0, 0.5; 1, 0.6; 2, 0.7 ] do
        writeSeed results "e" "full" "full" 0 s [ "accuracy", acc ]
        writeSeed results "e" "lora-r4" "lora" 4 s [ "accuracy", acc + 0.1 ]
    for s, acc in [ 0, 0.55; 1, 0.65 ] do writeSeed results "e" "dora-r4" "dora" 4 s [ "accuracy", acc ]

let private tableLines (dir: TempDir) name =
    File.ReadAllLines(Path.Combine(dir.File "t", name)) |> Array.filter (fun l -> l.StartsWith "| ")

let private specWithTables (dir: TempDir) (tables: string) =
    let spec = dir.File "s.yaml"
    File.WriteAllText(spec, "experiments:\n  - name: e\n    model: vit\n    dataset: { source: fashion_mnist }\n    methods: [full, lora]\n    ranks: [4]\n" + tables)
    spec

let aggregateTests =
    testList "seeds aggregate" [
        test "a cell over several seeds shows mean ± std and n; the best mean of a column is bold; per-seed values stay" {
            use dir = new TempDir()
            let results = dir.File "results"
            threeSeeds results
            Tables.Generate(ResultsStore(results), dir.File "t") |> ignore
            let lines = tableLines dir "e.md"
            Expect.equal lines.[0] "| method | rank | trainable params | accuracy | train time | peak memory |" "default header"
            Expect.equal lines.[2] "| full | — | 10 | 60.00 ± 10.00% (n=3) | 2.0 ± 0.0 s (n=3) | 1.0 ± 0.0 MiB (n=3) |" "full: one row for three seeds"
            Expect.equal lines.[3] "| lora | 4 | 50 | **70.00 ± 10.00% (n=3)** | 2.0 ± 0.0 s (n=3) | 1.0 ± 0.0 MiB (n=3) |" "lora: the best accuracy, bold; equal times and memory: none is best"
            Expect.equal lines.[4] "| dora | 4 | 50 | 60.00 ± 7.07% (n=2) | 2.0 ± 0.0 s (n=2) | 1.0 ± 0.0 MiB (n=2) |" "dora: two seeds"
            Expect.equal lines.Length 5 "header, separator, three rows"
            Expect.equal (ResultsStore(results).LoadAll().Count) 8 "every seed's record stays"
        }
        test "one seed: no ±, no n, no bold (today's layout)" {
            use dir = new TempDir()
            let results = dir.File "results"
            writeSeed results "e" "full" "full" 0 0 [ "accuracy", 0.5 ]
            writeSeed results "e" "lora-r4" "lora" 4 0 [ "accuracy", 0.6 ]
            Tables.Generate(ResultsStore(results), dir.File "t") |> ignore
            Expect.equal (tableLines dir "e.md").[3] "| lora | 4 | 50 | 60.00% | 2.0 s | 1.0 MiB |" "plain"
        }
        test "a baseline adds the per-seed paired difference (mean ± std of the differences, not of the means)" {
            use dir = new TempDir()
            let results = dir.File "results"
            threeSeeds results
            let spec = specWithTables dir "    tables:\n      - name: main\n        rows: [mode]\n        cells: [accuracy]\n        baseline: full\n"
            let code, _, err = runLora [ "tables"; "--results"; results; "--out"; dir.File "t"; "--spec"; spec ]
            Expect.equal code 0 err
            let lines = tableLines dir "e.md"
            Expect.equal lines.[0] "| mode | accuracy | Δ accuracy vs full |" "header"
            Expect.equal lines.[2] "| Full | 60.00 ± 10.00% (n=3) | — |" "the baseline has no difference"
            Expect.equal lines.[3] "| LoRA r4 | **70.00 ± 10.00% (n=3)** | +10.00 ± 0.00 pp (n=3) |" "paired: the same 10 points on every seed"
            Expect.equal lines.[4] "| DoRA r4 | 60.00 ± 7.07% (n=2) | +5.00 ± 0.00 pp (n=2) |" "paired over the seeds both have"
        }
    ]

let declaredTests =
    testList "declared tables" [
        test "rows × columns with filters, an aggregate, a format and headers (the ModelScope layout)" {
            use dir = new TempDir()
            let results = dir.File "results"
            threeSeeds results
            let spec =
                specWithTables dir
                    ("    tables:\n      - name: grid\n        caption: Accuracy, mean over seeds\n        rows: [{ method: Method }]\n        columns: [rank]\n"
                     + "        cells: [{ metric: accuracy, aggregate: mean, format: F3 }]\n        filters: { method: [lora, full] }\n")
            let code, _, err = runLora [ "tables"; "--results"; results; "--out"; dir.File "t"; "--spec"; spec ]
            Expect.equal code 0 err
            let text = File.ReadAllText(Path.Combine(dir.File "t", "e.md"))
            Expect.stringContains text "Accuracy, mean over seeds\n\n| Method | — | 4 |\n| --- | ---: | ---: |\n" "caption and header"
            Expect.stringContains text "| full | 0.600 | — |\n| lora | — | 0.700 |\n| Average | — | — |\n" "cells (a column with one value has no best)"
        }
        test "lora run keeps the declared tables beside the results: lora tables without the spec lays them out so; a spec without tables removes them" {
            use dir = new TempDir()
            let results = dir.File "results"
            let data = Directory.CreateDirectory(dir.File "fmnist").FullName
            let specOf tables =
                let spec = specWithTables dir tables
                File.WriteAllText(spec, File.ReadAllText(spec).Replace("{ source: fashion_mnist }", sprintf "{ source: fashion_mnist, path: \"%s\" }" data))
                spec
            let runSpec spec =
                use out = new StringWriter()
                use err = new StringWriter()
                let code = Commands.RunCommand(RunnerTests.runOpts spec results, RunnerTests.FakeExecutor(), "lora run test", out, err)
                Expect.equal code 0 (err.ToString())
            let header () =
                let code, _, err = runLora [ "tables"; "--results"; results; "--out"; dir.File "t" ]
                Expect.equal code 0 err
                (tableLines dir "e.md").[0]
            runSpec (specOf "    tables:\n      - name: main\n        rows: [mode]\n        cells: [accuracy]\n")
            Expect.isTrue (File.Exists(Path.Combine(results, "tables", "e.yaml"))) "kept beside the results"
            Expect.equal (header ()) "| mode | accuracy |" "the declared layout, without the spec"
            runSpec (specOf "")
            Expect.isFalse (File.Exists(Path.Combine(results, "tables", "e.yaml"))) "the spec in hand declares none"
            Expect.equal (header ()) "| method | rank | trainable params | accuracy | train time | peak memory |" "the default layout again"
        }
        testProperty "kept tables read back into equal records" (Prop.forAll (Arb.fromGen (DslGenerators.tableDecl "t")) (fun t ->
            YamlSpec.tables "kept.yaml" (YamlSpec.writeTableDecls [ t; { t with Name = "t2" } ]) = Ok [ t; { t with Name = "t2" } ]))
        test "the F# builder gives the same declaration as YAML" {
            use dir = new TempDir()
            let spec =
                specWithTables dir
                    "    tables:\n      - name: seg\n        rows: [{ model: Baseline }, backbone, mode]\n        cells: [dice, { metric: miou, header: mIoU }]\n        order: [model, mode]\n        baseline: lora\n"
            let yaml = (Spec.load spec |> function Ok es -> es | Error e -> failwithf "%A" e).Head.Tables
            let fs =
                [ table "seg" [ Table.rows [ "model"; "backbone"; "mode" ]; Table.headers [ "model", "Baseline" ]
                                Table.cellsOf [ TableCell.Of "dice"; { TableCell.Of "miou" with Header = Some "mIoU" } ]
                                Table.orderBy [ "model"; "mode" ]; Table.baseline "lora" ] ]
            Expect.equal yaml fs "same records"
        }
        test "an unknown metric, axis, format or aggregate is an error at its line and column" {
            use dir = new TempDir()
            let spec =
                specWithTables dir
                    "    tables:\n      - name: bad\n        rows: [methd]\n        cells: [acuracy, { metric: dice, format: pct, aggregate: median }]\n"
            let code, _, err = runLora [ "validate"; spec ]
            Expect.equal code 2 err
            Expect.stringContains err "s.yaml:9:16: experiments[0].tables[0].rows[0]: unknown axis 'methd' (did you mean method?)" "axis"
            Expect.stringContains err "s.yaml:10:17: experiments[0].tables[0].cells[0].metric: unknown metric 'acuracy' (did you mean accuracy?)" "metric"
            Expect.stringContains err "unknown format 'pct'" "format"
            Expect.stringContains err "unknown value 'median'" "aggregate"
        }
        test "tables are not part of a run's hash" {
            use dir = new TempDir()
            let plain = specWithTables dir ""
            let hashes spec = (Spec.load spec |> function Ok es -> es | Error e -> failwithf "%A" e) |> Spec.runs |> List.map (fun r -> ResolvedRun(r).Hash)
            let before = hashes plain
            let withTable = specWithTables dir "    tables:\n      - name: t\n        rows: [mode]\n        cells: [accuracy]\n"
            Expect.equal (hashes withTable) before "same hashes"
        }
    ]

let curveTests =
    testList "curves" [
        test "a run's curve: step 0, a point per window of steps, each epoch's end; the task loss apart from the regulariser" {
            let losses = [| for s in 1L .. 48L -> Lora.Core.Training.StepLoss(s, (if s <= 24L then 1 else 2), 2.0 / float s, 1e-3, Nullable(1.5 / float s)) |]
            let v e = Lora.Core.Training.EvalMetrics(10, 1.0 / float e, Nullable(0.5 + 0.1 * float e))
            let epochs = [| Lora.Core.Training.EpochMetrics(1, 24L, 0.9, v 1); Lora.Core.Training.EpochMetrics(2, 48L, 0.5, v 2) |]
            let r =
                Lora.Core.Training.TrainResult(v 1, losses, epochs, 48L, TimeSpan.FromSeconds 1.0, 1.0, 1.0, "VmHWM",
                                               Lora.Core.Training.Precision.Float32, "cpu", 10L, Nullable(), InitialValidation = v 0)
            let curve = TrainingExecutor.CurveOf r |> List.ofSeq
            let first = curve.Head
            Expect.equal (first.Step, first.TrainLoss, first.ValMetric) (0L, 2.0, Nullable 0.5) "step 0: the first batch's loss at the initial weights, the validation before training"
            let windows = curve |> List.filter (fun p -> p.Step > 0L && not p.ValMetric.HasValue)
            Expect.equal (windows |> List.map (fun p -> p.Step)) [ 2L .. 2L .. 48L ] "24 windows of 2 steps"
            Expect.floatClose Accuracy.high windows.Head.TrainLoss ((2.0 + 1.0) / 2.0) "the window's mean loss"
            Expect.floatClose Accuracy.high windows.Head.TaskLoss.Value ((1.5 + 0.75) / 2.0) "its task loss"
            Expect.floatClose Accuracy.high windows.Head.Regularizer.Value (1.5 - 1.125) "the regulariser is the difference"
            Expect.equal (curve |> List.filter (fun p -> p.Step > 0L && p.ValMetric.HasValue) |> List.map (fun p -> p.Epoch, p.TrainLoss)) [ 1, 0.9; 2, 0.5 ] "epoch ends"
            Expect.equal (curve |> List.map (fun p -> p.Step)) (curve |> List.map (fun p -> p.Step) |> List.sort) "ordered by step"
        }
        test "a series is the mean over seeds at each step, with its std; the loss chart takes the windows of newer records" {
            use dir = new TempDir()
            let results = dir.File "results"
            threeSeeds results
            let runs = ResultsStore(results).LoadAll() |> Seq.filter (fun r -> r.Labels.Method = "lora") |> List.ofSeq
            let series = Curves.SeriesOf(ResizeArray runs, (fun p -> Option.toNullable (if p.ValMetric.HasValue then Some p.ValMetric.Value else None)), (fun r -> r.Curve :> seq<_>))
            Expect.equal series.Count 1 "one line for the variant"
            Expect.equal series.[0].Label "lora-r4 (n=3)" "labelled with n"
            let struct (x, mean, std) = series.[0].Points |> Seq.exactlyOne
            Expect.equal x 10.0 "the epoch's step"
            Expect.floatClose Accuracy.high mean 0.7 "mean"
            Expect.floatClose Accuracy.high std 0.1 "std"
        }
    ]

let tests = testList "Results" [ recordTests; levelTests; aggregateTests; declaredTests; curveTests ]
