/// Several adapters in specs: `combine:` entries (YAML) and `combine [ combination ... ]` (F#)
/// compile into runs that depend on the runs they combine, hash canonically, fail located when
/// they name what cannot combine, and run for real into a result record and a PEFT adapter folder.
module Lora.Tests.CombinationSpecTests

open System
open System.IO
open Expecto
open Lora.Dsl
open Lora.Runner
open Lora.Tests.Generators

let private header =
    [ "experiments:"
      "  - name: mix"
      "    model: { zoo: vit, options: { img_size: 28, patch_size: 7, in_chans: 1, embed_dim: 32, depth: 1, num_heads: 2 } }"
      "    dataset: { source: fashion_mnist, classes: [0, 1, 2], limit_train: 150, limit_val: 60 }"
      "    methods: [lora]"
      "    ranks: [2, 4]"
      "    epochs: 1"
      "    batch: 50" ]

let private write (dir: TempDir) (name: string) (lines: string list) =
    let path = dir.File name
    File.WriteAllText(path, String.concat "\n" lines + "\n")
    path

let private load (path: string) =
    match (Spec.checkWith (fun _ -> true) path).Result with
    | Ok es -> es
    | Error errs -> failtestf "%s" (errs |> List.map string |> String.concat "\n")

let private hashes (es: Experiment list) = Spec.runs es |> List.map (fun r -> r.Name, Canonical.hash r)

let tests =
    testList "combinations in specs" [
        test "YAML and F# give the same combination runs and hashes; the runs combined keep theirs" {
            use dir = new TempDir()
            let combine =
                [ "    combine:"
                  "      - name: lora-mix"
                  "        adapters: [{ run: lora-r2, weight: 0.5 }, { run: lora-r4, weight: 0.5 }]"
                  "      - { name: lora-svd, adapters: [{ run: lora-r2 }, { run: lora-r4, weight: 0.3 }], combination: svd, svd_rank: 2 }" ]
            let yaml = load (write dir "mix.yaml" (header @ combine))
            let plain = load (write dir "plain.yaml" header)
            let fsx =
                load (write dir "mix.fsx"
                        [ "let experiments ="
                          "    [ experiment {"
                          "          name \"mix\""
                          "          model (zoo \"vit\" [ \"img_size\", Int 28; \"patch_size\", Int 7; \"in_chans\", Int 1; \"embed_dim\", Int 32; \"depth\", Int 1; \"num_heads\", Int 2 ])"
                          "          dataset (fashionMnist |> classes [ 0; 1; 2 ] |> limit 150 60)"
                          "          methods [ lora ]"
                          "          ranks [ 2; 4 ]"
                          "          epochs 1"
                          "          batch 50"
                          "          combine [ combination \"lora-mix\" [ \"lora-r2\", 0.5; \"lora-r4\", 0.5 ]"
                          "                    combination \"lora-svd\" [ \"lora-r2\", 1.0; \"lora-r4\", 0.3 ] |> combinedBy CombinationType.Svd |> svdRank 2 ]"
                          "      } ]" ])
            Expect.equal fsx yaml "same records"
            Expect.equal (load (write dir "back.yaml" [ YamlSpec.write yaml ])) yaml "written as YAML and read back"
            Expect.equal (hashes fsx) (hashes yaml) "same hashes"
            Expect.equal (hashes yaml |> List.take 2) (hashes plain) "the combined runs' hashes do not change with a combination beside them"
            let runs = Spec.runs yaml |> List.map ResolvedRun
            let byName n = runs |> List.find (fun r -> r.Spec.Name = n)
            let mix = byName "lora-mix"
            Expect.equal (List.ofSeq mix.Sources) [ (byName "lora-r2").Hash; (byName "lora-r4").Hash ] "it depends on the runs it combines"
            Expect.stringContains mix.ConfigJson "\"kind\":\"combining\"" "a combining run"
            // another weight, another run; a changed source, another run
            let reweighted = load (write dir "w.yaml" (header @ [ "    combine: [{ name: lora-mix, adapters: [{ run: lora-r2, weight: 0.6 }, { run: lora-r4, weight: 0.5 }] }]" ]))
            Expect.notEqual (hashes reweighted |> List.find (fst >> (=) "lora-mix")) (hashes yaml |> List.find (fst >> (=) "lora-mix")) "weights are identity"
            let retrained = load (write dir "e.yaml" ((header |> List.map (fun l -> l.Replace("epochs: 1", "epochs: 2"))) @ combine))
            Expect.notEqual (hashes retrained |> List.find (fst >> (=) "lora-mix")) (hashes yaml |> List.find (fst >> (=) "lora-mix")) "the sources' configuration is identity"
        }
        test "what cannot combine is a located error: an unknown run, a DoRA run, linear over two ranks, a name taken, svd_rank without svd" {
            use dir = new TempDir()
            let lines =
                (header |> List.map (fun l -> l.Replace("methods: [lora]", "methods: [lora, dora]")))
                @ [ "    combine:"                                                                       // 9
                    "      - name: lora-mix"                                                             // 10
                    "        adapters: [{ run: lora-r3, weight: 0.5 }, { run: dora-r4, weight: 0.5 }]"   // 11
                    "      - name: lora-lin"                                                             // 12
                    "        adapters: [{ run: lora-r2 }, { run: lora-r4 }]"                             // 13
                    "        combination: linear"                                                        // 14
                    "        svd_rank: 2"                                                                // 15
                    "      - name: lora-r2"                                                              // 16
                    "        adapters: [{ run: lora-r2 }]" ]
            let path = write dir "bad.yaml" lines
            match (Spec.checkWith (fun _ -> true) path).Result with
            | Ok _ -> failtest "expected errors"
            | Error errs ->
                let got = [ for e in errs -> e.Line, e.Field ]
                Expect.equal got
                    [ 11, "experiments[0].combine[0].adapters[0].run"
                      11, "experiments[0].combine[0].adapters[1].run"
                      14, "experiments[0].combine[1].combination"
                      15, "experiments[0].combine[1].svd_rank"
                      16, "experiments[0].combine[2].name" ]
                    "each at its line"
                Expect.stringContains errs.[0].Message "no run 'lora-r3' in this experiment (did you mean lora-r2" "says what exists"
                Expect.stringContains errs.[1].Message "'dora-r4' is a dora run: only plain LoRA adapters combine" "says why"
            // F#: at the combine operation's line
            let fsx =
                write dir "bad.fsx"
                    [ "let experiments ="
                      "    [ experiment {"
                      "          name \"mix\""
                      "          model (zoo \"vit\" [])"
                      "          dataset fashionMnist"
                      "          methods [ lora ]"
                      "          ranks [ 2 ]"
                      "          combine [ combination \"m\" [ \"lora-r9\", 1.0 ] ]"
                      "      } ]" ]
            match (Spec.checkWith (fun _ -> true) fsx).Result with
            | Error [ e ] -> Expect.equal (e.Line, e.Field) (8, "experiments[0].combine[0].adapters[0].run") "at the combine line"
            | other -> failtestf "expected one error, got %A" other
        }
        // training seeds torch's global generator
        testSequenced <| test "lora run trains two tiny LoRA runs, then combines them: cat with weights 1 and 0 is the first run, evaluated, with its own record and adapter folder" {
            if not (Lora.Core.Data.FashionMnist.IsInstalled()) then skiptest "dataset-fashion-mnist is not installed"
            use dir = new TempDir()
            let spec =
                write dir "mix.yaml"
                    (header @ [ "    combine:"
                                "      - { name: only-r2, adapters: [{ run: lora-r2, weight: 1 }, { run: lora-r4, weight: 0 }] }"
                                "      - { name: half, adapters: [{ run: lora-r2, weight: 0.5 }, { run: lora-r4, weight: 0.5 }], combination: svd, svd_rank: 2 }" ])
            let results = dir.File "results"
            use out = new StringWriter()
            use err = new StringWriter()
            let code = Commands.RunCommand({ RunnerTests.runOpts spec results with Tables = dir.File "tables" }, TrainingExecutor(), "lora run test", out, err)
            Expect.equal code 0 (out.ToString() + err.ToString())
            Expect.stringContains (out.ToString()) "4 ran, 0 skipped, 0 failed, 0 blocked" "two tunes, two combinations"
            let store = ResultsStore(results)
            let runs = Spec.runs (load spec) |> List.map ResolvedRun
            let record name = store.Load((runs |> List.find (fun r -> r.Spec.Name = name)).Hash)
            let r2, only = record "lora-r2", record "only-r2"
            Expect.equal only.Metrics.["accuracy"] r2.Metrics.["accuracy"] "ΔW = 1·ΔW₂ + 0·ΔW₄: the first run's accuracy"
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } only.Metrics.["loss"] r2.Metrics.["loss"] "and its loss (to float rounding)"
            Expect.equal (only.Labels.Kind, only.Labels.Method) ("tuning", "only-r2") "a tune in tables, under its own name"
            let half = runs |> List.find (fun r -> r.Spec.Name = "half")
            let adapter = Path.Combine(store.ArtifactsDir half.Hash, "adapter")
            Expect.isTrue (File.Exists(Path.Combine(adapter, "adapter_config.json")) && File.Exists(Path.Combine(adapter, "adapter_model.safetensors"))) "a PEFT adapter folder"
            Expect.stringContains (File.ReadAllText(Path.Combine(adapter, "adapter_config.json"))) "\"r\": 2" "svd_rank 2"
            let code, json, _ = runLora [ "plan"; spec; "--results"; results; "--json" ]
            let plan = System.Text.Json.Nodes.JsonNode.Parse(json).AsArray()
            let node = plan |> Seq.find (fun n -> string n.["name"] = "mix/half")
            Expect.equal (code, string node.["level"], string node.["status"]) (0, "1", "done") "plan: after the runs it combines, done"
            Expect.equal (node.["sources"].AsArray() |> Seq.map string |> List.ofSeq)
                [ for n in [ "lora-r2"; "lora-r4" ] -> (runs |> List.find (fun r -> r.Spec.Name = n)).Hash ] "plan --json names them"
            let table = File.ReadAllText(Path.Combine(dir.File "tables", "mix.md"))
            Expect.stringContains table "| only-r2 |" "the combination has a row in the table"
            Expect.stringContains table "| half |" "both do"
        }
    ]
