/// The README's main job, shrunk: the quickstart spec on a tiny Fashion-MNIST subset, trained for
/// real through the `lora run` command path, then tabulated.
module Lora.Tests.EndToEndTests

open System
open System.IO
open System.Text.RegularExpressions
open Expecto
open Lora.Runner
open Lora.CommandLine
open Lora.Tests.Generators

/// The quickstart with every size cut down (same methods, ranks and models).
let private tinyQuickstart (dir: TempDir) =
    let text =
        File.ReadAllText(Path.Combine(repoRoot, "experiments", "quickstart.yaml"))
        |> fun t -> Regex.Replace(t, @"limit_train: \d+", "limit_train: 200")
        |> fun t -> Regex.Replace(t, @"limit_val: \d+", "limit_val: 100")
        |> fun t -> Regex.Replace(t, @"epochs: \d+", "epochs: 1")
        |> fun t -> t.Replace("seeds: [0, 1, 2]", "seed: 0")
        |> fun t -> Regex.Replace(t, @"batch: \d+", "batch: 50")
        |> fun t -> Regex.Replace(t, @"tinit: \d+, tfinal: \d+", "tinit: 1, tfinal: 1")
    let spec = dir.File "quickstart.yaml"
    File.WriteAllText(spec, text)
    spec

let tests =
    testList "EndToEnd" [
        test "the committed paper tables are exactly what `lora tables` makes of the committed results" {
            use dir = new TempDir()
            // through the command, so the tables experiments declared (kept in results/tables) apply
            let code, _, err = runLora [ "tables"; "--results"; Path.Combine(repoRoot, "results"); "--out"; dir.Path ]
            Expect.equal code 0 err
            let committed = Path.Combine(repoRoot, "paper-tables")
            let mds = Directory.GetFiles(committed, "*.md") |> Array.map Path.GetFileName |> Array.sort
            Expect.isNonEmpty mds "paper-tables/ has tables"
            Expect.equal (Directory.GetFiles(dir.Path, "*.md") |> Array.map Path.GetFileName |> Array.sort) mds "same tables"
            for md in mds do
                Expect.equal (File.ReadAllText(Path.Combine(dir.Path, md))) (File.ReadAllText(Path.Combine(committed, md))) md
        }

        test "the quickstart spec on a tiny subset trains every method and produces a table with real numbers" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let spec = tinyQuickstart dir
            let results = dir.File "results"
            use out = new StringWriter()
            use err = new StringWriter()
            let opts = { RunnerTests.runOpts spec results with Tables = dir.File "tables" }
            let code = Commands.RunCommand(opts, TrainingExecutor(), "lora run test", out, err)
            Expect.equal code 0 (out.ToString() + err.ToString())
            let table = File.ReadAllLines(Path.Combine(dir.File "tables", "quickstart.md"))
            let rows = table |> Array.filter (fun l -> l.StartsWith "| " && not (l.StartsWith "| method") && not (l.StartsWith "| ---"))
            Expect.equal (rows |> Array.map (fun r -> r.Split('|').[1].Trim()) |> Array.distinct |> Array.sort)
                [| "adalora"; "adapter"; "dora"; "full"; "head"; "lora" |] "one row per method"
            Expect.equal rows.Length 10 "full, head and four methods at two ranks"
            for r in rows do
                let cells = r.Split('|') |> Array.map (fun c -> c.Trim())
                Expect.isFalse (Array.contains "—" cells.[3..5]) (sprintf "no missing numbers in %s" r)
                let acc = Double.Parse(cells.[4].TrimEnd('%', ' '), Globalization.CultureInfo.InvariantCulture)
                Expect.isTrue (acc > 0.0 && acc <= 100.0) (sprintf "accuracy is a percentage: %s" r)
            // the trainable-parameter column tells the methods apart: head < lora-r4 < lora-r8 < full
            let trainable name =
                rows |> Array.find (fun r -> r.Split('|').[1].Trim() + "-" + r.Split('|').[2].Trim() = name)
                |> fun r -> Int64.Parse(r.Split('|').[3].Trim().Replace(",", ""))
            Expect.isLessThan (trainable "head-—") (trainable "lora-4") "head trains less than LoRA"
            Expect.isLessThan (trainable "lora-4") (trainable "lora-8") "rank 8 trains more than rank 4"
            Expect.isLessThan (trainable "lora-8") (trainable "full-—") "LoRA trains less than full fine-tuning"
        }
    ]
