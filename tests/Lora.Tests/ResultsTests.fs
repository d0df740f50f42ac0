/// The run record (results/<hash>/metrics.json): one type, one serialiser, strict on reading.
module Lora.Tests.ResultsTests

open System
open System.IO
open Expecto
open Lora.Runner
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

let tests = testList "Results" [ recordTests; levelTests ]
