/// Several adapters on the command line: `merge`, `forward` and `combine` with --adapter repeated,
/// --weight, --combination cat|linear|svd, --disable-adapter, checked against identities that do
/// not go through the combination code (weights summing to 1 make a cat merge the weighted mean of
/// the single merges; PEFT's 'linear' of an adapter with itself doubles it).
module Lora.Tests.CliAdapterTests

open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open Lora.Core.IO
open Lora.Core.Models
open Lora.Core.Tuning
open Lora.Tests.Generators

let private vitConfig = fixture "vit_tiny_p4_32.json"
let private vitWeights = fixture "vit_tiny_p4_32.safetensors"

/// A randomised adapter of the fixture ViT, saved as a PEFT folder.
let private saveAdapter (dir: TempDir) (name: string) (config: TuningConfig) (seed: int) =
    use _ = torch.no_grad ()
    use m = Zoo.Create("vit", ModelArgs.FromFile vitConfig)
    StateDict.Load(m, vitWeights) |> ignore
    let t = Tuner.Apply(m, config)
    use g = new torch.Generator(uint64 seed)
    for p in t.TrainableParameters() do
        use r = torch.randn(p.shape, generator = g)
        p.add_(r * 0.1) |> ignore
    AdapterCheckpoint.Save(t, dir.File name)
    dir.File name

let private merge (adapters: string list) (extra: string list) (out: string) =
    let code, stdout, err =
        runLora ([ "merge"; "--model"; "vit"; "--model-config"; vitConfig; "--weights"; vitWeights; "--out"; out ]
                 @ (adapters |> List.collect (fun a -> [ "--adapter"; a ])) @ extra)
    Expect.equal (code, err) (0, "") $"merge {adapters} {extra}"
    stdout

let private load (path: string) = Safetensors.Load path

/// max over tensors of max |a − (Σ cᵢ·termᵢ)|.
let private maxDiff (a: Dictionary<string, torch.Tensor>) (terms: (float * Dictionary<string, torch.Tensor>) list) =
    a.Keys |> Seq.map (fun k ->
        use expected = terms |> List.map (fun (c, t) -> t.[k] * c) |> List.reduce (fun x y -> x + y)
        use d = (a.[k] - expected).abs().max()
        d.ToDouble()) |> Seq.max

type private Adapters = { A: string; B: string; A2: string; H: string; Dora: string; Dir: TempDir }

/// A: LoRA r=2 on qkv; A2: a copy of A; B: r=3 on qkv and fc2; H: r=2 on fc1 with a trained head;
/// all with alpha = r (scaling 1). Dora: DoRA on qkv.
let private adapters () =
    let dir = new TempDir()
    let a = saveAdapter dir "a" (LoraConfig(Targets = [| "qkv" |], Rank = 2, Alpha = 2.0)) 1
    let a2 = dir.File "a2"
    Directory.CreateDirectory a2 |> ignore
    for f in Directory.GetFiles a do File.Copy(f, Path.Combine(a2, Path.GetFileName f))
    { A = a; A2 = a2; Dir = dir
      B = saveAdapter dir "b" (LoraConfig(Targets = [| "qkv"; "fc2" |], Rank = 3, Alpha = 3.0)) 2
      H = saveAdapter dir "h" (LoraConfig(Targets = [| "fc1" |], Rank = 2, Alpha = 2.0, ModulesToSave = [| "head" |])) 3
      Dora = saveAdapter dir "dora" (LoraConfig(Targets = [| "qkv" |], Rank = 2, UseDora = true)) 4 }

let private forward (args: string list) (input: string) (out: string) =
    let code, _, err = runLora ([ "forward"; "--model"; "vit"; "--model-config"; vitConfig; "--input"; input; "--out"; out ] @ args)
    Expect.equal (code, err) (0, "") $"forward {args}"
    (load out).["output"]

let tests =
    testSequenced <| testList "Cli adapters" [
        test "merge: cat with weights summing to 1 is the weighted mean of the single merges; svd at full rank equals it; linear of A with itself doubles A" {
            let x = adapters ()
            use _ = x.Dir
            let d = x.Dir
            merge [ x.A ] [] (d.File "ma.safetensors") |> ignore
            merge [ x.B ] [] (d.File "mb.safetensors") |> ignore
            let said = merge [ x.A; x.B ] [ "--weight"; "0.7"; "--weight"; "0.3" ] (d.File "mab.safetensors")
            Expect.stringContains said "×0.7 + " "reports the weights"
            Expect.stringContains said "(cat)" "and the combination"
            let ma, mb, mab, w = load (d.File "ma.safetensors"), load (d.File "mb.safetensors"), load (d.File "mab.safetensors"), load vitWeights
            Expect.isLessThan (maxDiff mab [ 0.7, ma; 0.3, mb ]) 1e-5 "cat: 0.7·M_A + 0.3·M_B"
            // scaling 1: PEFT's svd target Σ wᵢ·sᵢ·ΔWᵢ is Σ wᵢ·ΔWᵢ, kept whole at rank 2 + 3
            merge [ x.A; x.B ] [ "--weight"; "0.7"; "--weight"; "0.3"; "--combination"; "svd"; "--svd-rank"; "5" ] (d.File "svd5.safetensors") |> ignore
            Expect.isLessThan (maxDiff (load (d.File "svd5.safetensors")) [ 1.0, mab ]) 1e-5 "svd at rank 5 = cat"
            merge [ x.A; x.B ] [ "--weight"; "0.7"; "--weight"; "0.3"; "--combination"; "svd" ] (d.File "svd3.safetensors") |> ignore
            Expect.isGreaterThan (maxDiff (load (d.File "svd3.safetensors")) [ 1.0, mab ]) 1e-6 "svd at the default rank 3 truncates"
            // linear: A' = 2·√(0.5)·A, B' = 2·√(0.5)·B, so ΔW' = 2·ΔW_A
            merge [ x.A; x.A2 ] [ "--weight"; "0.5"; "--weight"; "0.5"; "--combination"; "linear" ] (d.File "lin.safetensors") |> ignore
            Expect.isLessThan (maxDiff (load (d.File "lin.safetensors")) [ 2.0, ma; -1.0, w ]) 1e-5 "linear: base + 2·ΔW_A"
            // one adapter with a weight: w·ΔW
            merge [ x.B ] [ "--weight"; "0.25" ] (d.File "quarter.safetensors") |> ignore
            Expect.isLessThan (maxDiff (load (d.File "quarter.safetensors")) [ 0.25, mb; 0.75, w ]) 1e-5 "one adapter ×0.25"
        }
        test "forward: several adapters = the merged weights; --disable-adapter = the base model" {
            let x = adapters ()
            use _ = x.Dir
            let d = x.Dir
            use g = new torch.Generator(11UL)
            use input = torch.randn([| 2L; 3L; 32L; 32L |], generator = g)
            Safetensors.Save(d.File "in.safetensors", [ KeyValuePair("input", input) ])
            let inp = d.File "in.safetensors"
            merge [ x.A; x.B ] [ "--weight"; "0.7"; "--weight"; "0.3" ] (d.File "mab.safetensors") |> ignore
            use viaMerge = forward [ "--weights"; d.File "mab.safetensors" ] inp (d.File "o1.safetensors")
            use viaAdapters = forward [ "--weights"; vitWeights; "--adapter"; x.A; "--adapter"; x.B; "--weight"; "0.7"; "--weight"; "0.3" ] inp (d.File "o2.safetensors")
            Expect.isLessThan ((viaMerge - viaAdapters).abs().max().ToDouble()) 1e-5 "same logits"
            use plain = forward [ "--weights"; vitWeights ] inp (d.File "o3.safetensors")
            use disabled = forward [ "--weights"; vitWeights; "--adapter"; x.B; "--disable-adapter" ] inp (d.File "o4.safetensors")
            Expect.equal ((plain - disabled).abs().max().ToDouble()) 0.0 "disabled = base, exactly"
            use disabled2 = forward [ "--weights"; vitWeights; "--adapter"; x.A; "--adapter"; x.H; "--disable-adapter" ] inp (d.File "o5.safetensors")
            Expect.equal ((plain - disabled2).abs().max().ToDouble()) 0.0 "several disabled (and a trained head) = base, exactly"
            use enabled = forward [ "--weights"; vitWeights; "--adapter"; x.B ] inp (d.File "o6.safetensors")
            Expect.isGreaterThan ((plain - enabled).abs().max().ToDouble()) 1e-5 "the adapter does change the output"
        }
        test "predict: several adapters = the merged weights; disabled = the base; lora help combine" {
            let x = adapters ()
            use _ = x.Dir
            let d = x.Dir
            let px = Array.init (3 * 32 * 32) (fun i -> byte ((i * 13 + i / 1024 * 50) % 256))
            Lora.Core.Data.Png.Write(d.File "img.png", System.ReadOnlySpan px, 3, 32, 32)
            let predict (args: string list) =
                let code, out, err = runLora ([ "predict"; "--model"; "vit"; "--model-config"; vitConfig; "--top-k"; "10"; "--json" ] @ args @ [ d.File "img.png" ])
                Expect.equal (code, err) (0, "") $"predict {args}"
                // the scores only: the image path is the same
                out
            merge [ x.A; x.B ] [ "--weight"; "0.7"; "--weight"; "0.3" ] (d.File "mab.safetensors") |> ignore
            let viaMerge = predict [ "--weights"; d.File "mab.safetensors" ]
            let viaAdapters = predict [ "--weights"; vitWeights; "--adapter"; x.A; "--adapter"; x.B; "--weight"; "0.7"; "--weight"; "0.3" ]
            Expect.equal viaAdapters viaMerge "same predictions (scores to 6 digits)"
            Expect.equal (predict [ "--weights"; vitWeights; "--adapter"; x.B; "--disable-adapter" ]) (predict [ "--weights"; vitWeights ]) "disabled = base"
            let help = Lora.CommandLine.CommandLine.Parse [| "help"; "combine" |]
            Expect.equal help.ExitCode 0 "help combine"
            Expect.stringContains help.Message "--svd-rank" "combine's options"
        }
        test "export: several adapters = the merged weights' ONNX file, byte for byte; disabled = the base's" {
            let x = adapters ()
            use _ = x.Dir
            let d = x.Dir
            let export (args: string list) (out: string) =
                let code, _, err = runLora ([ "export"; "--model"; "vit"; "--model-config"; vitConfig; "--out"; d.File out ] @ args)
                Expect.equal (code, err) (0, "") $"export {args}"
                File.ReadAllBytes(d.File out)
            merge [ x.A; x.B ] [ "--weight"; "0.7"; "--weight"; "0.3"; "--combination"; "svd" ] (d.File "mab.safetensors") |> ignore
            Expect.equal (export [ "--weights"; vitWeights; "--adapter"; x.A; "--adapter"; x.B; "--weight"; "0.7"; "--weight"; "0.3"; "--combination"; "svd" ] "e1.onnx")
                         (export [ "--weights"; d.File "mab.safetensors" ] "e2.onnx") "combined = merged"
            Expect.equal (export [ "--weights"; vitWeights; "--adapter"; x.A; "--adapter"; x.H; "--disable-adapter" ] "e3.onnx")
                         (export [ "--weights"; vitWeights ] "e4.onnx") "disabled = base"
        }
        test "combine: a PEFT adapter folder that merges as the combination does; the trained head comes along" {
            let x = adapters ()
            use _ = x.Dir
            let d = x.Dir
            let code, said, err =
                runLora [ "combine"; "--model"; "vit"; "--model-config"; vitConfig; "--adapter"; x.A; "--adapter"; x.H
                          "--weight"; "0.6"; "--weight"; "0.4"; "--combination"; "svd"; "--out"; d.File "combined" ]
            Expect.equal (code, err) (0, "") "combine ok"
            Expect.stringContains said "(svd)" "reports the combination"
            let config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(d.File "combined", "adapter_config.json"))).AsObject()
            Expect.equal (PeftConfigTests.violations config) [] "PEFT's config rules hold"
            Expect.equal (config.["modules_to_save"].ToJsonString()) """["head"]""" "the head is saved"
            merge [ d.File "combined" ] [] (d.File "m1.safetensors") |> ignore
            merge [ x.A; x.H ] [ "--weight"; "0.6"; "--weight"; "0.4"; "--combination"; "svd" ] (d.File "m2.safetensors") |> ignore
            Expect.isLessThan (maxDiff (load (d.File "m1.safetensors")) [ 1.0, load (d.File "m2.safetensors") ]) 1e-5 "combined folder = combined on the fly"
            merge [ x.H ] [] (d.File "mh.safetensors") |> ignore
            let m1, mh = load (d.File "m1.safetensors"), load (d.File "mh.safetensors")
            Expect.equal ((m1.["head.weight"] - mh.["head.weight"]).abs().max().ToDouble()) 0.0 "H's trained head"
        }
        test "bad combinations: exit 2 for the command line, exit 1 with one line for adapters that cannot combine" {
            let x = adapters ()
            use _ = x.Dir
            let d = x.Dir
            let run extra = runLora ([ "merge"; "--model"; "vit"; "--model-config"; vitConfig; "--weights"; vitWeights; "--out"; d.File "m.safetensors" ] @ extra)
            for extra, expected in
                [ [ "--adapter"; x.A; "--adapter"; x.B; "--weight"; "0.5" ], "one --weight per --adapter"
                  [ "--adapter"; x.A; "--combination"; "ties" ], "--combination must be cat, linear or svd"
                  [ "--adapter"; x.A; "--adapter"; x.B; "--svd-rank"; "2" ], "go with --combination svd"
                  [ "--adapter"; x.A; "--adapter"; x.B; "--combination"; "svd"; "--svd-clamp"; "2" ], "a quantile in [0, 1]" ] do
                let code, _, err = run extra
                Expect.equal code 2 $"{extra}: exit 2"
                Expect.stringContains err expected $"{extra}: says why"
            for extra, expected in
                [ [ "--adapter"; x.A; "--adapter"; x.B; "--combination"; "linear" ], "needs the same rank"
                  [ "--adapter"; x.A; "--adapter"; x.Dora ], $"'{x.Dora}' is a DoRA adapter: its magnitude vector has no weighted combination"
                  [ "--adapter"; x.A; "--weight"; "-1" ], "must not be negative" ] do
                let code, _, err = run extra
                Expect.equal code 1 $"{extra}: exit 1"
                Expect.stringStarts (CliTests.oneLine err) "lora merge: " $"{extra}: one line"
                Expect.stringContains err expected $"{extra}: says why"
                Expect.isFalse (File.Exists(d.File "m.safetensors")) "nothing written"
            let code, _, err = runLora [ "forward"; "--model"; "vit"; "--input"; "x"; "--out"; "y"; "--disable-adapter" ]
            Expect.equal code 2 "--disable-adapter without --adapter: exit 2"
            Expect.stringContains err "need at least one --adapter" "says why"
        }
    ]
