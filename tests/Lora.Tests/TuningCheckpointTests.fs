module Lora.Tests.TuningCheckpointTests

open System
open System.IO
open Expecto
open TorchSharp
open Lora.Core.IO
open Lora.Core.Tuning
open Lora.Tests.Generators
open Lora.Tests.TuningModels

let private same (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && (use d = (a - b).abs().max() in d.ToDouble() = 0.0)

let private randomise (ps: Modules.Parameter seq) (seed: int) =
    // a local generator: Expecto runs tests in parallel, so the global seed is shared
    use g = new torch.Generator(uint64 (abs seed))
    use _ = torch.no_grad ()
    for p in ps do
        use r = torch.randn(p.shape, dtype = p.dtype, generator = g)
        p.copy_(r * 0.3) |> ignore

/// Two identical base models (same seed) so that one can be saved and the other loaded.
let private twin () =
    let a = vitTiny ()
    let b = vitTiny ()
    use _ = torch.no_grad ()
    let sa = a.state_dict()
    for KeyValue(k, v) in b.state_dict() do v.copy_(sa.[k]) |> ignore
    a.eval (); b.eval ()
    a, b

let private roundTrip (config: TuningConfig) (train: TunedModel -> unit) =
    let a, b = twin ()
    let ta = Tuner.Apply(a, config)
    for struct (_, l) in ta.Layers do randomise (l.AdapterParameters "default") 31
    for struct (_, w) in ta.SavedModules do randomise (w.Copy("default").parameters()) 32
    train ta
    use dir = new TempDir()
    AdapterCheckpoint.Save(ta, dir.Path)
    let tb = AdapterCheckpoint.Load(b, dir.Path)
    use x = torch.randn(2L, 3L, 8L, 8L)
    use ya = a.forward x
    use yb = b.forward x
    use d = (ya - yb).abs().max()
    Expect.isLessThan (d.ToDouble()) 1e-6 "save → load gives the same outputs"
    let keysA = AdapterCheckpoint.StateDict(ta).Keys |> Seq.sort |> List.ofSeq
    let keysB = AdapterCheckpoint.StateDict(tb).Keys |> Seq.sort |> List.ofSeq
    Expect.equal keysB keysA "same PEFT keys"
    keysA, File.ReadAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))

let tests =
    testList "TuningCheckpoint" [
        test "LoRA save → load is the identity, with PEFT keys and config fields" {
            let keys, json = roundTrip (LoraConfig(Targets = [| "qkv"; "fc1" |], Rank = 2, Alpha = 4.0, ModulesToSave = [| "head" |])) ignore
            Expect.contains keys "base_model.model.blocks.0.attn.qkv.lora_A.weight" "lora_A"
            Expect.contains keys "base_model.model.blocks.1.mlp.fc1.lora_B.weight" "lora_B"
            Expect.contains keys "base_model.model.head.weight" "modules_to_save as PEFT saves it"
            Expect.equal keys.Length (2 * 2 * 2 + 2) "4 layers × 2 + head weight and bias"
            for f in [ "\"peft_type\": \"LORA\""; "\"r\": 2"; "\"lora_alpha\": 4"; "\"target_modules\""; "\"use_dora\": false"; "\"bias\": \"none\"" ] do
                Expect.stringContains json f "config field"
        }
        test "bias modes save the biases PEFT saves" {
            let keys, json = roundTrip (LoraConfig(Targets = [| "qkv" |], Rank = 2, Bias = BiasMode.LoraOnly)) ignore
            Expect.contains keys "base_model.model.blocks.0.attn.qkv.base_layer.bias" "lora_only: the tuned layer's bias"
            Expect.equal keys.Length 6 "2 × (A, B, bias)"
            Expect.stringContains json "\"bias\": \"lora_only\"" "bias field"
            let keysAll, _ = roundTrip (LoraConfig(Targets = [| "qkv" |], Rank = 2, Bias = BiasMode.All)) ignore
            Expect.contains keysAll "base_model.model.blocks.1.mlp.fc2.bias" "all: every bias"
        }
        test "Adapter (bottleneck) save → load is the identity" {
            let keys, json = roundTrip (BottleneckAdapterConfig()) ignore
            Expect.contains keys "base_model.model.blocks.0.adapter_attn.fc1.weight" "adapter key"
            Expect.equal keys.Length (2 * 2 * 4) "2 blocks × 2 adapters × 4 tensors"
            Expect.stringContains json "BOTTLENECK_ADAPTER" "type"
        }
        test "DoRA save → load is the identity (magnitude saved without .weight)" {
            let keys, json = roundTrip (LoraConfig(UseDora = true, Targets = [| "qkv" |], Rank = 2)) ignore
            Expect.contains keys "base_model.model.blocks.0.attn.qkv.lora_magnitude_vector" "magnitude key"
            Expect.stringContains json "\"use_dora\": true" "use_dora"
        }
        test "AdaLoRA save slices A, E, B to the kept ranks, and load gives the same outputs" {
            let keys, json =
                roundTrip (AdaLoraConfig(Targets = [| "qkv" |], InitRank = 4, TargetRank = 2, TotalStep = 3L)) (fun t ->
                    let hook = StepHooks.Of(t.Model) |> Seq.exactlyOne
                    hook.Begin 3L
                    for p in t.TrainableParameters() do p.grad <- torch.randn_like(p)
                    for s in 1L .. 3L do hook.AfterOptimizerStep s)
            Expect.contains keys "base_model.model.blocks.0.attn.qkv.lora_E" "lora_E"
            Expect.stringContains json "\"peft_type\": \"ADALORA\"" "type"
            Expect.stringContains json "blocks.0.attn.qkv.lora_E.default" "rank pattern key as PEFT"
        }
        test "AdaLoRA on a Conv2d (the patch embedding) saves A as r × in·k², sliced to the kept ranks, and loads to the same outputs" {
            let keys, json =
                roundTrip (AdaLoraConfig(Targets = [| "patch_embed.proj"; "qkv" |], InitRank = 4, TargetRank = 2, TotalStep = 3L)) (fun t ->
                    let hook = StepHooks.Of(t.Model) |> Seq.exactlyOne
                    for p in t.TrainableParameters() do p.grad <- torch.randn_like(p)
                    for s in 1L .. 3L do hook.AfterOptimizerStep s)
            Expect.contains keys "base_model.model.patch_embed.proj.lora_A" "conv lora_A (PEFT's key: no .weight)"
            Expect.stringContains json "patch_embed.proj.lora_E.default" "the conv's rank pattern"
        }
        test "AdaLoRA saved tensors have the kept ranks" {
            let a = vitTiny ()
            let t = Tuner.Apply(a, AdaLoraConfig(Targets = [| "qkv" |], InitRank = 4, TargetRank = 2, TotalStep = 2L))
            let hook = StepHooks.Of(a) |> Seq.exactlyOne
            for p in t.TrainableParameters() do p.grad <- torch.randn_like(p)
            hook.AfterOptimizerStep 1L
            hook.AfterOptimizerStep 2L
            let sd = AdapterCheckpoint.StateDict t
            let total = [ 0; 1 ] |> List.sumBy (fun i -> sd.[sprintf "base_model.model.blocks.%d.attn.qkv.lora_E" i].shape.[0])
            Expect.equal total 4L "2 layers × target 2 ranks kept in all"
            for i in 0 .. 1 do
                let r = sd.[sprintf "base_model.model.blocks.%d.attn.qkv.lora_E" i].shape.[0]
                Expect.equal sd.[sprintf "base_model.model.blocks.%d.attn.qkv.lora_A" i].shape [| r; 16L |] "A sliced"
                Expect.equal sd.[sprintf "base_model.model.blocks.%d.attn.qkv.lora_B" i].shape [| 48L; r |] "B sliced"
        }
        test "a changed shape and a missing key are both reported, naming the keys; the model is unchanged" {
            let a, b = twin ()
            let ta = Tuner.Apply(a, LoraConfig(Targets = [| "qkv" |], Rank = 2))
            use dir = new TempDir()
            AdapterCheckpoint.Save(ta, dir.Path)
            let file = Path.Combine(dir.Path, AdapterCheckpoint.WeightsFile)
            let sd = Safetensors.Load file
            sd.["base_model.model.blocks.0.attn.qkv.lora_A.weight"] <- torch.zeros(3L, 16L)
            sd.Remove "base_model.model.blocks.1.attn.qkv.lora_B.weight" |> ignore
            Safetensors.Save(file, sd)
            let before = b.state_dict().Keys |> List.ofSeq
            try
                AdapterCheckpoint.Load(b, dir.Path) |> ignore
                failtest "expected the load to fail"
            with :? InvalidDataException as e ->
                Expect.stringContains e.Message "'base_model.model.blocks.0.attn.qkv.lora_A.weight' has shape [3, 16] but the model needs [2, 16]" "shape"
                Expect.stringContains e.Message "missing key 'base_model.model.blocks.1.attn.qkv.lora_B.weight'" "missing"
            Expect.equal (b.state_dict().Keys |> List.ofSeq) before "model left as it was"
        }
        test "the real PEFT folder (vit_tiny, r=4, qkv + fc1) loads onto a ViT-shaped model" {
            let m = new ViT(64L, 2, 4L, 32L, 10L, torch.CPU)
            let t = AdapterCheckpoint.Load(m, fixture "peft_lora_vit_tiny")
            let c = t.Configs.["default"] :?> LoraConfig
            Expect.equal (c.Rank, c.Alpha, List.ofSeq c.Targets) (4, 8.0, [ "fc1"; "qkv" ]) "config read"
            let file = Safetensors.Load(Path.Combine(fixture "peft_lora_vit_tiny", AdapterCheckpoint.WeightsFile))
            let sd = AdapterCheckpoint.StateDict t
            Expect.equal (sd.Keys |> Seq.sort |> List.ofSeq) (file.Keys |> Seq.sort |> List.ofSeq) "same keys"
            for KeyValue(k, v) in file do Expect.isTrue (same sd.[k] v) (sprintf "%s loaded" k)
            Expect.equal (t.Summary().Trainable) (2L * (4L * 64L + 192L * 4L + 4L * 64L + 256L * 4L)) "trainable = the adapter"
        }
    ]
