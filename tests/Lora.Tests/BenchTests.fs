module Lora.Tests.BenchTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Lora.Core.Models
open Lora.Core.Training
open Lora.Core.Tuning
open Lora.Runner
open Lora.Conversion
open Lora.Tests.Generators
open Lora.Tests.ReferenceAdamW

type Tensor = torch.Tensor

/// A ViT small enough for a test step in milliseconds.
let tinyVitJson = """{"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}"""
let tinyArgs = ModelArgs.FromJson(tinyVitJson).With("num_classes", 5L).With("img_size", 16L)



let benchArgs (dir: TempDir) extra =
    let cfg = dir.File "vit.json"
    File.WriteAllText(cfg, tinyVitJson)
    [ "bench"; "--model"; "vit"; "--model-config"; cfg; "--batch"; "2"; "--img"; "16"; "--classes"; "5"; "--rank"; "2"
      "--steps"; "1"; "--warmup"; "1" ] @ extra

/// The parameter counts of the method's configuration applied to a fresh tiny ViT.
let expectedCounts method rank =
    use model = Zoo.Create("vit", tinyArgs)
    match BenchMethods.config method rank model with
    | null -> ()
    | c -> Tuner.Apply(model, c) |> ignore
    let s = ParameterSummary.Of model
    s.Trainable, s.Total

/// 1-4 parameter shapes (vectors and matrices, sides 1-5) drawn from the seed.
let shapesOf (seed: int) =
    let r = Random(seed)
    [ for _ in 1 .. r.Next(1, 5) ->
        if r.Next(2) = 0 then [| int64 (r.Next(1, 6)) |] else [| int64 (r.Next(1, 6)); int64 (r.Next(1, 6)) |] ]

/// Copies g into the parameter's gradient in place (FlatAdamW's gradients are views of its buffer).
let setGrad (p: Modules.Parameter) (g: Tensor) =
    use gp = p.grad
    gp.copy_(g) |> ignore

/// Random parameters from a generator of their own (Expecto runs tests in parallel: torch's global
/// generator is shared), and their copy.
let makeParams (shapes: int64[] list) seed =
    let g = new torch.Generator(uint64 seed)
    let a = shapes |> List.mapi (fun i s -> $"p{i}", new Modules.Parameter(torch.randn(s, generator = g)))
    a, a |> List.map (fun (n, p) -> n, new Modules.Parameter(p.detach().clone()))

/// Makes the second model's parameters equal to the first's (same structure).
let copyParams (src: torch.nn.Module) (dst: torch.nn.Module) =
    use _ = torch.no_grad()
    let d = dst.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq
    for struct (n, p) in src.named_parameters() do d[n].copy_(p) |> ignore

let close (a: Tensor) (b: Tensor) tol = (a - b).abs().max().item<float32>() <= float32 tol

let tests =
    testList "Bench" [
        // sequenced: a benchmark resets the process's peak RSS (clear_refs), which would disturb other
        // tests measuring it at the same time
        testSequenced <| testList "cli" [
            test "bench --json: one line per method with peft_anchor's fields, counts equal to ParameterSummary" {
                use dir = new TempDir()
                let methods = [ "full"; "lora"; "lora-all"; "dora"; "adalora"; "adapter" ]
                let code, out, err = runLora (benchArgs dir [ "--methods"; String.Join(",", methods); "--precision"; "bf16"; "--json" ])
                Expect.equal code 0 $"exit code (stderr: {err})"
                let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun l -> JsonNode.Parse(l).AsObject())
                Expect.equal (lines |> Array.map (fun j -> string j["method"]) |> List.ofArray) methods "one line per method, in order"
                for j in lines do
                    for field in [ "train_img_s"; "step_ms"; "infer_img_s"; "peak_mib"; "trainable"; "total"; "precision"; "device"; "method"; "model"; "mode" ] do
                        Expect.isTrue (j.ContainsKey field) $"{j}: has {field}"
                    let m = string j["method"]
                    Expect.equal (string j["precision"]) "bf16" "as asked"
                    Expect.equal (string j["device"]) "cpu" "device"
                    Expect.isGreaterThan (j["train_img_s"].GetValue<float>()) 0.0 $"{m}: training throughput"
                    Expect.isGreaterThan (j["step_ms"].GetValue<float>()) 0.0 $"{m}: step time"
                    Expect.isGreaterThan (j["infer_img_s"].GetValue<float>()) 0.0 $"{m}: inference throughput"
                    Expect.isGreaterThan (j["peak_mib"].GetValue<float>()) 50.0 $"{m}: peak RSS in MiB (libtorch alone is more)"
                    let trainable, total = expectedCounts m 2
                    Expect.equal (j["trainable"].GetValue<int64>()) trainable $"{m}: trainable = ParameterSummary"
                    Expect.equal (j["total"].GetValue<int64>()) total $"{m}: total = ParameterSummary"
                    Expect.equal (j["infer_merged"].GetValue<bool>()) (m <> "full" && m <> "adapter") $"{m}: merged for inference where mergeable"
                let lora = lines |> Array.find (fun j -> string j["method"] = "lora")
                Expect.equal (lora["trainable"].GetValue<int64>()) 677L "by hand: 2 blocks × (A 2·32 + B 96·2) + the head's copy 32·5 + 5"
            }
            test "bench: a method that cannot apply prints its error line, the others still run, exit code 1" {
                use dir = new TempDir()
                let cfg = dir.File "convnext.json"
                File.WriteAllText(cfg, """{"depths": [1, 1], "dims": [8, 16]}""")
                let code, out, _ = runLora [ "bench"; "--model"; "convnext"; "--model-config"; cfg; "--batch"; "2"; "--img"; "32"; "--classes"; "3"
                                             "--rank"; "2"; "--steps"; "1"; "--warmup"; "0"; "--methods"; "vpt,full"; "--json" ]
                Expect.equal code 1 "a method failed"
                let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun l -> JsonNode.Parse(l).AsObject())
                Expect.equal (lines |> Array.map (fun j -> string j["method"]) |> List.ofArray) [ "vpt"; "full" ] "a line for each"
                // (lora was the failing method here until bench took each family's targets)
                Expect.isTrue (lines[0].ContainsKey "error") "vpt: ConvNeXt has no prompt host, the line says so"
                Expect.isFalse (lines[1].ContainsKey "error") "full still ran"
                Expect.isGreaterThan (lines[1].["train_img_s"].GetValue<float>()) 0.0 "with its figures"
            }
            test "bench on a ConvNeXt and a ResNet: the layer-targeting presets take the family's targets, or --targets" {
                use dir = new TempDir()
                let bench model (cfgJson: string) (methods: string list) extra =
                    let cfg = dir.File (model + ".json")
                    File.WriteAllText(cfg, cfgJson)
                    let code, out, err = runLora ([ "bench"; "--model"; model; "--model-config"; cfg; "--batch"; "2"; "--img"; "32"; "--classes"; "3"
                                                    "--rank"; "2"; "--steps"; "1"; "--warmup"; "0"; "--methods"; String.Join(",", methods); "--json" ] @ extra)
                    Expect.equal code 0 $"{model}: every method ran (stderr: {err}; out: {out})"
                    out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun l -> JsonNode.Parse(l).AsObject())
                let convnext = """{"depths": [1, 1], "dims": [8, 16]}"""
                let resnet = """{"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}"""
                let layered = [ "lora"; "lora-all"; "dora"; "adalora"; "ia3"; "loha"; "lokr" ]
                for j in bench "convnext" convnext (layered @ [ "vera"; "bitfit"; "ssf"; "ln_tuning" ]) [] do
                    Expect.isFalse (j.ContainsKey "error") $"convnext {j}"
                for j in bench "resnet" resnet (layered @ [ "bitfit"; "ssf" ]) [] do
                    Expect.isFalse (j.ContainsKey "error") $"resnet {j}"
                // --targets: only the stem's and blocks' conv1 → LoRA r·(in·k² + out) over the 5 conv1s
                let lines = bench "resnet" resnet [ "lora" ] [ "--targets"; "conv1" ]
                use m = Zoo.Create("resnet", ModelArgs.FromJson(resnet).With("num_classes", 3L))
                let convs = [ for struct (n, c) in m.named_modules() do match c with :? Modules.Conv2d as c when n.EndsWith "conv1" -> yield c | _ -> () ]
                let lora = convs |> List.sumBy (fun c -> 2L * (c.in_channels * c.kernel_size.[0] * c.kernel_size.[1] + c.out_channels))
                Expect.equal (lines[0].["trainable"].GetValue<int64>()) (lora + 8L * 3L + 3L) "conv1 LoRA + the head's copy (8·3 + 3)"
            }
            test "bench --isolate: each method in its own process, the same lines; the table reads them back" {
                use dir = new TempDir()
                let code, out, err = runLora (benchArgs dir [ "--methods"; "lora,full"; "--isolate"; "--json" ])
                Expect.equal code 0 $"exit code (stderr: {err})"
                let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun l -> JsonNode.Parse(l).AsObject())
                Expect.equal (lines |> Array.map (fun j -> string j["method"]) |> List.ofArray) [ "lora"; "full" ] "one line per method, in order"
                for j in lines do
                    let m = string j["method"]
                    let trainable, total = expectedCounts m 2
                    Expect.equal (j["trainable"].GetValue<int64>()) trainable $"{m}: trainable"
                    Expect.equal (j["total"].GetValue<int64>()) total $"{m}: total"
                    Expect.isGreaterThan (j["train_img_s"].GetValue<float>()) 0.0 $"{m}: training throughput"
                    Expect.equal (string j["peak_source"]) "VmHWM" $"{m}: the child's own peak RSS"
                let code, out, _ = runLora (benchArgs dir [ "--methods"; "lora,full"; "--isolate" ])
                Expect.equal code 0 "table"
                Expect.equal (out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.skip 2 |> Array.map (fun l -> l.Split(' ')[0])) [| "lora"; "full" |] "rows from the children's lines"
                let code, _, err = runLora (benchArgs dir [ "--isolate"; "--in-process" ])
                Expect.equal code 2 "contradictory flags"
                Expect.stringContains err "--isolate and --in-process" "named"
            }
            test "bench without --json: a plain table when redirected, one row per method" {
                use dir = new TempDir()
                let code, out, _ = runLora (benchArgs dir [ "--methods"; "lora"; "full" ])
                Expect.equal code 0 "exit code"
                let lines = out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                Expect.stringContains lines[0] "cpu, fp32" "the title names the precision (fp32 by default on CPU)"
                Expect.stringStarts lines[1] "method" "header"
                Expect.equal (lines |> Array.skip 2 |> Array.map (fun l -> l.Split(' ')[0])) [| "lora"; "full" |] "rows"
            }
            test "bench: bad methods, models and sizes are named; --device cuda without CUDA is one line" {
                use dir = new TempDir()
                let code, _, err = runLora (benchArgs dir [ "--methods"; "lora,mora"; "--batch"; "0" ])
                Expect.equal code 2 "bad input"
                Expect.stringContains err "unknown method(s) mora" "the method"
                Expect.stringContains err "--batch must be at least 1" "the size"
                let code, _, err = runLora [ "bench"; "--model"; "vit_bace_patch16_224" ]
                Expect.equal code 2 "unknown model"
                Expect.stringContains err "vit_base_patch16_224" "suggests the close name"
                if not (torch.cuda.is_available()) then
                    let code, out, err = runLora [ "bench"; "--model"; "vit"; "--device"; "cuda" ]
                    Expect.equal code 1 "no CUDA"
                    Expect.equal out "" "nothing on stdout"
                    Expect.equal (err.Trim().Split('\n').Length) 1 $"one line: {err}"
                    Expect.stringContains err "CUDA is not available" "says why"
            }
        ]
        test "every bench preset on every zoo family's smallest model: it fits, or fails saying what would fit (meta device, no run)" {
            // the presets that apply only to some families, and the family's message says so
            let doesNotFit =
                set [ for f in [ "convnext"; "resnet"; "unet" ] do
                        for m in [ "adapter"; "adaptformer"; "vpt"; "vpt-deep" ] -> f, m
                      for f in [ "tiny_vit"; "sam_tiny_vit" ] do
                        for m in [ "vpt"; "vpt-deep" ] -> f, m
                      for f in [ "resnet"; "unet" ] do
                        for m in [ "ln_tuning"; "vera"; "lora-pissa"; "lora-olora"; "lora-qv"; "boft" ] -> f, m
                      for f in [ "convnext"; "resnet"; "unet" ] do
                        for m in [ "convpass" ] -> f, m
                      // FacT's preset is the paper's ViT targets (SAM's encoder needs its own: the message names them)
                      for f in [ "tiny_vit"; "sam_vit"; "sam_tiny_vit"; "convnext"; "resnet"; "unet" ] do
                        for m in [ "fact"; "fact-tk" ] -> f, m ]
            let smallest =
                [ "vit", "vit_tiny_patch16_224"; "tiny_vit", "tiny_vit_5m_224"; "convnext", "convnext_tiny"; "resnet", "resnet18"
                  "sam_vit", "sam_vit_b"; "sam_tiny_vit", "mobile_sam"; "unet", "unet" ]
            // every pairing is checked, and all that disagree are reported at once
            let wrong =
                [ for family, name in smallest do
                    use model = Zoo.Create(name, ModelArgs.Empty, torch.META)
                    Expect.equal (FamilyTargets.For(model).Family) family $"{name}'s family"
                    for m in BenchMethods.names do
                        let problems = BenchMethods.check m 4 [] model
                        let said = String.Join("; ", problems)
                        if doesNotFit.Contains(family, m) then
                            if problems.IsEmpty then yield $"{m} on {name} should be refused, and fits"
                            elif not (said.Contains "use " || said.Contains " fits " || said.Contains "cannot tune" || said.Contains "for BatchNorm"
                                       || said.Contains "applies to" || said.Contains "divisible by") then
                                yield $"{m} on {name} does not say what would fit: {said}"
                        elif not problems.IsEmpty then yield $"{m} on {name} should fit: {said}" ]
            Expect.equal wrong [] "every preset on every family"
        }
        test "a target that matches nothing is told the family's targets the method accepts" {
            use resnet = Zoo.Create("resnet18", ModelArgs.Empty, torch.META)
            let said = String.Join("; ", ToCore.check (CoreMethod.Tune(Ia3Config(Targets = [| "qkv" |], FeedforwardModules = [||]))) resnet)
            Expect.stringContains said "target pattern 'qkv' matches no module of this ResNet; on the resnet family (IA)³ fits targets [conv1, conv2]" "the advice"
            use convnext = Zoo.Create("convnext_tiny", ModelArgs.Empty, torch.META)
            let said = String.Join("; ", ToCore.check (CoreMethod.Tune(LoraConfig(Targets = [| "qkv" |], Rank = 4))) convnext)
            Expect.stringContains said "on the convnext family LoRA fits targets [fc1, fc2]" "ConvNeXt's"
            let said = String.Join("; ", ToCore.check (CoreMethod.Tune(VeraConfig(Targets = [| "qkv" |], Rank = 4))) resnet)
            Expect.stringContains said "none of the resnet family's usual targets (conv1, conv2) fit VeRA" "VeRA is Linear-only"
            Expect.equal (BenchMethods.targetsOf [ "fc2"; "fc1" ] convnext).FeedForward [ "fc2" ] "--targets keep the family's feed-forward layers among them"
        }
        testPropertyWithConfig { config with maxTest = 25 } "FlatAdamW equals the per-parameter AdamW (1e-6), its state too" <| fun (seed: int) ->
                let shapes = shapesOf seed
                let a, b = makeParams shapes seed
                let ref = AdamW(a |> Seq.map (fun (n, p) -> struct (n, p)), 0.05)
                use flat = new FlatAdamW(b |> Seq.map (fun (n, p) -> struct (n, p)), 0.05)
                let gen = new torch.Generator(uint64 seed + 1UL)
                for step in 1 .. 3 do
                    let grads = shapes |> List.map (fun s -> torch.randn(s, generator = gen))
                    for (_, p), g in List.zip a grads do p.grad <- g.clone()
                    for (_, p), g in List.zip b grads do setGrad p g
                    ref.Step(1e-2 * float step)
                    flat.Step(1e-2 * float step)
                    flat.ZeroGrad()
                for (_, p), (_, q) in List.zip a b do
                    Expect.isTrue (close p q 1e-6) $"parameter {p.shape} after 3 steps"
                let sa = ref.State() |> Seq.map (fun struct (n, t) -> n, t) |> Map.ofSeq
                let sb = flat.State() |> Seq.map (fun struct (n, t) -> n, t) |> Map.ofSeq
                Expect.sequenceEqual (Map.keys sb) (Map.keys sa) "state names"
                for KeyValue(n, t) in sa do Expect.isTrue (close t sb[n] 1e-6) $"state {n}"
        test "FlatAdamW.ClipGradNorm equals torch.nn.utils.clip_grad_norm_; ZeroGrad catches replaced gradients" {
            let shapes = [ [| 3L; 4L |]; [| 4L |]; [| 2L; 2L |] ]
            let a, b = makeParams shapes 7
            use flat = new FlatAdamW(b |> Seq.map (fun (n, p) -> struct (n, p)), 0.0)
            for (_, p), (_, q) in List.zip a b do
                let g = torch.randn(p.shape) * 3.0
                p.grad <- g
                setGrad q g
            let refNorm = torch.nn.utils.clip_grad_norm_(a |> Seq.map snd, 1.0)
            use norm = flat.ClipGradNorm(1.0)
            Expect.floatClose Accuracy.medium (float (norm.item<float32>())) refNorm "norm before clipping"
            for (_, p), (_, q) in List.zip a b do
                use gq = q.grad
                Expect.isTrue (close p.grad gq 1e-6) "clipped gradients"
            (snd b[1]).grad <- null
            Expect.throwsT<InvalidOperationException> (fun () -> flat.ZeroGrad()) "a dropped gradient is reported"
        }
        test "bf16 path: frozen weights, head and LoRA factors stored in bf16, with gradients; logits and grads close to fp32" {
            let build () =
                torch.manual_seed(3L) |> ignore
                let m = Zoo.Create("vit", tinyArgs)
                let t = Tuner.Apply(m, BenchMethods.config "lora" 4 m)
                use _ = torch.no_grad()
                for (_, l) in t.Layers do ((l :?> LoraLinear).B("default").weight.normal_(0.0, 0.1) |> ignore)
                m
            use m32 = build ()
            use m16 = build ()
            copyParams m32 m16
            MixedPrecision.Apply(m16, Precision.BFloat16) |> ignore
            let ps = m16.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq
            Expect.equal ps["blocks.0.attn.qkv.base_layer.weight"].dtype torch.bfloat16 "frozen base in bf16"
            Expect.equal ps["blocks.0.norm1.weight"].dtype torch.bfloat16 "frozen norm in bf16"
            Expect.equal ps["blocks.0.attn.qkv.lora_A.default.weight"].dtype torch.bfloat16 "LoRA A in bf16 (FlatAdamW keeps its float32 master)"
            Expect.equal ps["head.modules_to_save.default.weight"].dtype torch.bfloat16 "trained head in bf16 (FlatAdamW keeps its float32 master)"
            torch.manual_seed(4L) |> ignore
            let x = torch.randn(3L, 3L, 16L, 16L)
            let y32 = m32.forward(x)
            let y16 = m16.forward(x.``to``(torch.bfloat16))
            Expect.equal y16.dtype torch.bfloat16 "logits of the bf16 head"
            let rel = ((y16 - y32).norm() / y32.norm()).item<float32>()
            Expect.isLessThan rel 0.05f $"bf16 logits within 5 percent of fp32 (relative error {rel})"
            y32.sum().backward()
            y16.sum().backward()
            let g name (m: torch.nn.Module) = (m.named_parameters() |> Seq.find (fun struct (n, _) -> n = name) |> fun struct (_, p) -> p.grad)
            for name in [ "blocks.0.attn.qkv.lora_A.default.weight"; "blocks.1.attn.qkv.lora_B.default.weight"; "head.modules_to_save.default.weight" ] do
                let a, b = g name m32, g name m16
                Expect.equal b.dtype torch.bfloat16 $"{name}: gradient in the parameter's dtype"
                let cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0L).item<float32>()
                Expect.isGreaterThan cos 0.99f $"{name}: gradient direction (cosine {cos})"
        }
        // sequenced: the MLP has dropout, drawn from torch's global generator (re-seeded per step)
        testSequenced <| test "Trainer reading the loss every 3 steps: the same curve and weights; NaN named at its step" {
            let data = TrainingTests.synthetic 96 2
            let run every =
                let model = TrainingTests.mlp 4 64L
                let r = Trainer(model, TrainOptions(Epochs = 2, BatchSize = 16, Seed = 1, LossReadEvery = every)).Fit(data)
                r, TrainingTests.parametersOf model
            let r1, w1 = run 1
            let r3, w3 = run 3
            let curve (r: TrainResult) = r.LossCurve |> Seq.map (fun (s: StepLoss) -> s.Step, s.Epoch, s.Loss, s.LearningRate) |> List.ofSeq
            Expect.equal (curve r3) (curve r1) "loss curve"
            Expect.equal (curve r3).Length 12 "every step recorded"
            for (n, a), (_, b) in List.zip w1 w3 do Expect.isTrue (TrainingTests.same a b) $"{n}"
            use d = new TempDir()
            let model = TrainingTests.mlp 4 64L
            StepHooks.Attach(model, TrainingTests.RecordingHook(model, 0.0f, 5))
            let o = TrainOptions(Epochs = 2, BatchSize = 16, LossReadEvery = 4, CheckpointDir = d.Path, CheckpointEverySteps = 3)
            let e = Expect.throwsC (fun () -> Trainer(model, o).Fit(data) |> ignore) id
            Expect.equal (e :?> TrainingDivergedException).Step 5L "the first non-finite step"
            let struct (meta, tensors) = CheckpointFile.Read(Path.Combine(d.Path, Trainer.CheckpointFileName))
            Expect.stringContains meta "\"Step\":3" "the checkpoint of step 3 stays (none written after the NaN)"
            for t in tensors.Values do t.Dispose()
        }
        test "TrainingStep (FlatAdamW, on-device clipping) trains as the per-parameter loop with clip_grad_norm_" {
            let build () =
                torch.manual_seed(5L) |> ignore
                let m = Zoo.Create("vit", tinyArgs)
                Tuner.Apply(m, BenchMethods.config "lora-all" 2 m) |> ignore
                m
            use a = build ()
            use b = build ()
            copyParams a b
            torch.manual_seed(6L) |> ignore
            let x = torch.randn(4L, 3L, 16L, 16L)
            let y = torch.randint(0L, 5L, [| 4L |])
            let trainable = a.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (n, p) -> (n, p)) |> Seq.toArray
            let opt = AdamW(trainable |> Seq.map (fun (n, p) -> struct (n, p)), 0.05)
            use step = new TrainingStep(b, 0.05, 0.9, 0.999, 1e-8, 0.5)
            for i in 1 .. 3 do
                let la = torch.nn.functional.cross_entropy(a.forward(x), y)
                la.backward()
                torch.nn.utils.clip_grad_norm_(trainable |> Seq.map snd, 0.5) |> ignore
                opt.Step(1e-2)
                a.zero_grad(true)
                let lb = step.WithExtraLoss(torch.nn.functional.cross_entropy(b.forward(x), y))
                Expect.floatClose Accuracy.medium (float (lb.item<float32>())) (float (la.item<float32>())) $"loss at step {i}"
                step.BackwardAndStep(lb, 1e-2)
                step.AfterStep(int64 i)
            let pb = b.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq
            for (n, p) in trainable do Expect.isTrue (close p pb[n] 1e-5) $"{n} after 3 steps"
        }
    ]
