module Lora.Tests.MixedPrecisionTests

open System
open System.Threading
open Expecto
open TorchSharp
open Lora.Core.Models
open Lora.Core.Training
open Lora.Core.Tuning
open Lora.Tests.Generators
open Lora.Tests.BenchTests

type Tensor = torch.Tensor

let private bf16 = torch.ScalarType.BFloat16
let private exact (a: Tensor) (b: Tensor) = a.shape = b.shape && a.eq(b).all().item<bool>()
let private named (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> Map.ofSeq

/// Tiny configurations of every zoo family, with the input size each takes.
let private families =
    [ "vit", tinyVitJson.Replace("}", ", \"img_size\": 16}"), 16L, "head."
      "convnext", """{"depths": [1, 1], "dims": [8, 16], "num_classes": 3}""", 32L, "head."
      "resnet", """{"layers": [1, 1], "channels": [8, 16], "num_classes": 3}""", 32L, "fc."
      "tiny_vit", """{"num_classes": 3, "embed_dims": [8, 16, 16, 16], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 2], "window_sizes": [4, 4, 4, 2]}""", 64L, "head."
      "unet", """{"in_chans": 3, "num_classes": 1, "base_width": 4, "depth": 2}""", 16L, "outc."
      "sam_vit", """{"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 2, "global_attn_indexes": [1],
                     "out_chans": 16, "decoder_num_heads": 2, "decoder_mlp_dim": 32, "iou_head_hidden_dim": 16}""", 32L, "mask_decoder." ]

let tests =
    testList "MixedPrecision" [
        testPropertyWithConfig { config with maxTest = 25 } "bf16 parameters with float32 masters follow float32 AdamW; the parameters are the rounded masters" <| fun (seed: int) ->
            let shapes = shapesOf seed
            let a, _ = makeParams shapes seed
            // the reference starts where the bf16 run starts: from the rounded values
            let ref = a |> List.map (fun (n, p) -> n, new Modules.Parameter(p.detach().``to``(bf16).``to``(torch.float32)))
            let low = a |> List.map (fun (n, p) -> n, new Modules.Parameter(p.detach().``to``(bf16)))
            use f32 = new FlatAdamW(ref |> Seq.map (fun (n, p) -> struct (n, p)), 0.05)
            use f16 = new FlatAdamW(low |> Seq.map (fun (n, p) -> struct (n, p)), 0.05)
            let gen = new torch.Generator(uint64 seed + 1UL)
            for step in 1 .. 4 do
                let grads = shapes |> List.map (fun s -> torch.randn(s, generator = gen).``to``(bf16))
                for (_, p), g in List.zip ref grads do setGrad p (g.``to``(torch.float32))
                for (_, p), g in List.zip low grads do setGrad p g
                f32.Step(1e-3 * float step)
                f16.Step(1e-3 * float step)
                f32.ZeroGrad()
                f16.ZeroGrad()
            let masters = f16.MasterWeights() |> Seq.map (fun struct (n, t) -> n, t) |> Map.ofSeq
            Expect.equal masters.Count shapes.Length "a master per bf16 parameter"
            for (n, r), (_, p) in List.zip ref low do
                Expect.equal p.dtype bf16 $"{n} stays bf16"
                Expect.equal masters[n].dtype torch.float32 $"{n}: float32 master"
                Expect.isTrue (close masters[n] r 1e-6) $"{n}: master = float32 AdamW"
                Expect.isTrue (exact p (masters[n].``to``(bf16))) $"{n}: parameter = rounded master"
            let state = f16.State() |> Seq.map (fun struct (n, t) -> n, t) |> Map.ofSeq
            Expect.equal state[$"exp_avg_sq.p0"].dtype torch.float32 "float32 moments"
            Expect.isTrue (state.ContainsKey "master.p0") "the masters are part of the state (checkpoints)"

        test "updates below a bf16 ulp accumulate in the master until the parameter moves" {
            use p = new Modules.Parameter(torch.ones(4L, dtype = bf16))
            use opt = new FlatAdamW([ struct ("w", p) ], 0.0)
            let one = torch.ones(4L, dtype = bf16)
            Expect.isTrue (exact (one - 1e-4) one) "1 - 1e-4 is 1 in bf16: a plain bf16 update is lost"
            for _ in 1 .. 200 do
                setGrad p (torch.ones(4L, dtype = bf16))
                opt.Step(1e-4)
                opt.ZeroGrad()
            let struct (_, master) = opt.MasterWeights() |> Seq.exactlyOne
            Expect.floatClose Accuracy.medium (float (master[0L].item<float32>())) 0.98 "200 Adam steps of 1e-4"
            Expect.isLessThan (p[0L].``to``(torch.float32).item<float32>()) 0.99f "the bf16 parameter moved too"
        }

        test "state and Load: an optimiser rebuilt from a checkpoint continues identically" {
            let shapes = [ [| 3L; 4L |]; [| 4L |] ]
            let a, b = makeParams shapes 11
            let low (ps: (string * Modules.Parameter) list) = ps |> List.map (fun (n, p) -> n, new Modules.Parameter(p.detach().``to``(bf16)))
            let pa, pb = low a, low b
            use oa = new FlatAdamW(pa |> Seq.map (fun (n, p) -> struct (n, p)), 0.01)
            let grads = shapes |> List.map (fun s -> torch.randn(s).``to``(bf16))
            let step (o: FlatAdamW) ps =
                for (_, p), g in List.zip ps grads do setGrad p g
                o.Step(1e-2)
                o.ZeroGrad()
            for _ in 1 .. 3 do step oa pa
            let saved = oa.State() |> Seq.map (fun struct (n, t) -> n, t.clone()) |> Map.ofSeq
            // the rebuilt run loads the parameters first, then the optimiser (as Trainer.Resume)
            let copyInto (q: Modules.Parameter) (p: Modules.Parameter) =
                use _ = torch.no_grad()
                q.copy_(p) |> ignore
            for (_, q), (_, p) in List.zip pb pa do copyInto q p
            use ob = new FlatAdamW(pb |> Seq.map (fun (n, p) -> struct (n, p)), 0.01)
            ob.Load(3L, saved)
            step oa pa
            step ob pb
            let ma = oa.MasterWeights() |> Seq.map (fun struct (_, t) -> t) |> List.ofSeq
            let mb = ob.MasterWeights() |> Seq.map (fun struct (_, t) -> t) |> List.ofSeq
            for x, y in List.zip ma mb do Expect.isTrue (exact x y) "masters identical after one more step"
        }

        test "Apply casts everything but the adapters; RestoreFloat32 puts the masters back, trainable" {
            use m = Zoo.Create("vit", tinyArgs)
            Tuner.Apply(m, Benchmark.Config("lora", 4)) |> ignore
            let head0 = ((named m)["head.modules_to_save.default.weight"]).detach().clone()
            let exactWeights = MixedPrecision.Apply(m, Precision.BFloat16)
            let trainables = [ for struct (n, p) in m.named_parameters() do if p.requires_grad then n ]
            Expect.equal (Set.ofSeq exactWeights.Keys) (Set.ofList trainables) "the float32 values of the trainables it cast (head, LoRA A and B)"
            Expect.isTrue (exact exactWeights["head.modules_to_save.default.weight"] head0) "as they were before the cast"
            let ps = named m
            Expect.equal ps["blocks.0.attn.qkv.base_layer.weight"].dtype bf16 "frozen base in bf16"
            Expect.equal ps["blocks.0.norm1.weight"].dtype bf16 "frozen norm in bf16"
            Expect.equal ps["head.modules_to_save.default.weight"].dtype bf16 "trained head in bf16 (master in the optimiser)"
            Expect.equal ps["blocks.0.attn.qkv.lora_A.default.weight"].dtype bf16 "LoRA A in bf16 (master in the optimiser)"
            Expect.equal ps["blocks.0.attn.qkv.lora_B.default.weight"].dtype bf16 "LoRA B in bf16 (master in the optimiser)"
            Expect.equal ps["cls_token"].dtype torch.float32 "parameters of non-leaf modules stay float32"
            use step = new TrainingStep(m, 0.01, 0.9, 0.999, 1e-8, 1.0, exactWeights)
            let startMasters = step.Optimizer.MasterWeights() |> Seq.map (fun struct (n, t) -> n, t.clone()) |> Map.ofSeq
            Expect.isTrue (exact startMasters["head.modules_to_save.default.weight"] head0) "masters start from the exact float32 weights"
            use x = torch.randn(2L, 3L, 16L, 16L).``to``(bf16)
            let loss = torch.nn.functional.cross_entropy(m.forward(x).``to``(torch.float32), torch.tensor([| 0L; 1L |]))
            step.BackwardAndStep(loss, 1e-2)
            step.AfterStep(1L)
            let master = step.Optimizer.MasterWeights() |> Seq.map (fun struct (n, t) -> n, t.clone()) |> Map.ofSeq
            Expect.equal (Set.ofSeq master.Keys) (Set.ofList trainables) "masters of the bf16 trainables"
            MixedPrecision.RestoreFloat32(m, step.Optimizer)
            let after = named m
            for KeyValue(n, w) in master do
                Expect.equal after[n].dtype torch.float32 $"{n}: float32 again"
                Expect.isTrue after[n].requires_grad $"{n}: still trainable"
                Expect.isTrue (exact after[n] w) $"{n}: holds the master"
            Expect.equal after["blocks.0.attn.qkv.base_layer.weight"].dtype bf16 "frozen weights stay bf16"
        }

        test "bf16 training at lr 0 gives back the float32 weights bit for bit (the masters start from them, not from their bf16 rounding)" {
            for withExact in [ true; false ] do
                torch.manual_seed 3L |> ignore
                use m = Zoo.Create("vit", tinyArgs)
                let before = named m |> Map.map (fun _ p -> p.detach().clone())
                let exactWeights = MixedPrecision.Apply(m, Precision.BFloat16)
                use step = new TrainingStep(m, 0.01, 0.9, 0.999, 1e-8, 0.0, (if withExact then exactWeights else null))
                use x = torch.randn(2L, 3L, 16L, 16L).``to``(bf16)
                let loss = m.forward(x).``to``(torch.float32).square().mean()
                step.BackwardAndStep(loss, 0.0)
                step.AfterStep(1L)
                MixedPrecision.RestoreFloat32(m, step.Optimizer)
                let after = named m
                let rounded = before |> Map.filter (fun n b -> b.dim() >= 2L && not (exact after[n] b)) |> Map.count
                if withExact then Expect.equal rounded 0 "every weight is its float32 self again"
                else Expect.isGreaterThan rounded 0 "without them the masters would be the rounded weights (this test can fail)"
        }

        // sequenced: both runs build their model from torch's global generator (re-seeded per run)
        testSequenced <| test "LoRA factors stored in bf16 train bit for bit as float32 factors cast at every forward; DoRA and AdaLoRA keep float32 factors" {
            let run castFactors =
                torch.manual_seed 9L |> ignore
                use m = Zoo.Create("vit", tinyArgs)
                Tuner.Apply(m, Benchmark.Config("lora", 4)) |> ignore
                let exactWeights =
                    if castFactors then MixedPrecision.Apply(m, Precision.BFloat16)
                    else
                        // the earlier recipe: everything but the adapters in bf16, A and B float32
                        let head = [ for struct (n, p) in m.named_parameters() do if n.StartsWith "head.modules_to_save" then n, p.detach().clone() ] |> dict
                        MixedPrecision.CastOutsideAdapters(m, bf16)
                        Collections.Generic.Dictionary<string, Tensor>(head)
                Expect.equal (named m).["blocks.0.attn.qkv.lora_A.default.weight"].dtype (if castFactors then bf16 else torch.float32) "factor dtype"
                use step = new TrainingStep(m, 0.01, 0.9, 0.999, 1e-8, 0.0, exactWeights)
                use gen = new torch.Generator(1UL)   // held: a generator the GC finalizes mid-call is a use-after-free
                use x = torch.randn(4L, 3L, 16L, 16L, generator = gen).``to``(bf16)
                use y = torch.tensor([| 0L; 1L; 2L; 0L |])
                let losses =
                    [ for s in 1L .. 4L do
                        use _scope = torch.NewDisposeScope()
                        let loss = torch.nn.functional.cross_entropy(m.forward(x).``to``(torch.float32), y)
                        let v = loss.item<float32>()
                        step.BackwardAndStep(loss, 1e-2)
                        step.AfterStep(s)
                        v ]
                MixedPrecision.RestoreFloat32(m, step.Optimizer)
                losses, [ for struct (n, p) in m.named_parameters() do if p.requires_grad then n, p.detach().``to``(torch.float32).clone() ]
            let l1, w1 = run true
            let l0, w0 = run false
            Expect.sequenceEqual l1 l0 "the same losses"
            for (n, a), (_, b) in List.zip w1 w0 do Expect.isTrue (exact a b) $"{n}: the same trained weight"
            for cfg, name in [ Benchmark.Config("dora", 4), "lora_A.default.weight"
                               Benchmark.Config("adalora", 4), "lora_A.default" ] do
                use m = Zoo.Create("vit", tinyArgs)
                Tuner.Apply(m, cfg) |> ignore
                MixedPrecision.Apply(m, Precision.BFloat16) |> ignore
                Expect.equal (named m).["blocks.0.attn.qkv." + name].dtype torch.float32 $"{cfg.Method}: factors stay float32"
        }

        // every family runs a bf16 training step end to end: full fine-tuning (all bf16, masters for
        // all) and with the head alone trainable; a dtype mismatch anywhere is an exception here
        for family, json, size, head in families do
            test $"{family}: bf16 training steps, full and head-only (the rest frozen), finite loss and most trainables move" {
                for fullTuning in [ true; false ] do
                    torch.manual_seed 5L |> ignore
                    use m = Zoo.Create(family, json)
                    if not fullTuning then
                        for struct (n, p) in m.named_parameters() do p.requires_grad <- n.StartsWith head
                    let exactWeights = MixedPrecision.Apply(m, Precision.BFloat16)
                    use step = new TrainingStep(m, 0.01, 0.9, 0.999, 1e-8, 1.0, exactWeights)
                    let before = step.Trainable |> Array.map (fun struct (n, p) -> n, p.detach().clone())
                    m.train()
                    use x = torch.randn(2L, 3L, size, size).``to``(bf16)
                    for s in 1L .. 2L do
                        use _scope = torch.NewDisposeScope()
                        let y = m.forward(x)
                        let loss = y.``to``(torch.float32).square().mean()
                        Expect.isTrue (Double.IsFinite(float (loss.item<float32>()))) $"{family} full={fullTuning}: finite loss"
                        step.BackwardAndStep(loss, 1e-2)
                        step.AfterStep(s)
                    let changed = before |> Array.filter (fun (n, b) -> not (exact b ((named m)[n])))
                    Expect.isGreaterThan changed.Length (before.Length / 2) $"{family} full={fullTuning}: trainable parameters moved ({changed.Length} of {before.Length})"
            }

        // Sequenced: dropout draws from torch's global generator.
        testSequenced <| test "Trainer under bf16, full fine-tuning: resumes bit-identically and ends with float32 weights" {
            let data = TrainingTests.synthetic 160 3
            let options dir = TrainOptions(Epochs = 2, BatchSize = 32, LearningRate = 5e-3, Seed = 3, Precision = Precision.BFloat16,
                                           CheckpointDir = dir, CheckpointEverySteps = 3)
            use full = new TempDir()
            let reference = TrainingTests.mlp 6 64L
            let r0 = Trainer(reference, options full.Path).Fit(data)
            Expect.equal reference.Fc1.weight.dtype torch.float32 "float32 after training"
            Expect.isTrue (r0.Final.Top1.Value > 0.3) $"it learned (top-1 {r0.Final.Top1.Value})"
            use d = new TempDir()
            let cts = new CancellationTokenSource()
            let stopAt = { new IProgress<TrainingProgress> with member _.Report p = if p.Step = 7L then cts.Cancel() }
            Expect.throwsT<OperationCanceledException> (fun () -> Trainer(TrainingTests.mlp 6 64L, options d.Path).Fit(data, null, stopAt, cts.Token) |> ignore) "interrupted"
            let resumed = TrainingTests.mlp 6 64L
            let r1 = Trainer(resumed, options d.Path).Resume(data)
            Expect.equal (r1.ResumedFromStep |> Option.ofNullable) (Some 6L) "from the checkpoint of step 6"
            for (n, a), (_, b) in List.zip (TrainingTests.parametersOf reference) (TrainingTests.parametersOf resumed) do
                Expect.isTrue (exact a b) $"{n} identical (the masters were checkpointed)"
            Expect.sequenceEqual r1.LossCurve r0.LossCurve "same loss curve"
        }
    ]
