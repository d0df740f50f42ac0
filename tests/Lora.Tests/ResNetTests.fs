/// The zoo's ResNet family against torchvision's ResNet (same parameter names as timm's).
module Lora.Tests.ResNetTests

open System.IO
open Expecto
open TorchSharp
open Lora.Core.Models
open Lora.Core.IO
open Lora.Core.Tuning

/// (key, shape) pairs of a state dict, without BatchNorm's num_batches_tracked counters.
let keysAndShapes (m: torch.nn.Module) =
    [ for kv in m.state_dict() do
        if not (kv.Key.EndsWith "num_batches_tracked") then
            yield kv.Key, (kv.Value.shape |> Array.map string |> String.concat ",") ]

/// A keys file from make_resnet_fixtures.py: one "key d0,d1,..." line per tensor.
let readKeys name =
    [ for line in File.ReadAllLines(Generators.fixture name) do
        match line.Split ' ' with
        | [| k; s |] -> yield k, s
        | _ -> failwith $"bad line in {name}: {line}" ]

let narrow fx =
    let m = Zoo.Create("resnet", ModelArgs.FromFile(Generators.fixture (fx + ".json")))
    StateDict.Load(m, Generators.fixture (fx + ".safetensors")) |> ignore
    m.eval()
    m

/// Non-zero lora_B (a fresh adapter is the identity, which would hide a wrong merge).
let perturbLoraB (m: torch.nn.Module) =
    use _g = torch.no_grad()
    for struct (n, p) in m.named_parameters() do
        if n.Contains "lora_B" then p.normal_(0.0, 0.1) |> ignore

let tests =
    testList "ResNet" [
        test "parameter counts are timm's (1000 classes)" {
            Expect.equal (Zoo.ParameterCount "resnet18") 11_689_512L "resnet18"
            Expect.equal (Zoo.ParameterCount "resnet34") 21_797_672L "resnet34"
            Expect.equal (Zoo.ParameterCount "resnet50") 25_557_032L "resnet50"
            Expect.equal (Zoo.ParameterCount("resnet18", ModelArgs.Empty.With("num_classes", 10))) (11_689_512L - 990L * 513L) "10 classes"
        }
        for name in [ "resnet18"; "resnet50" ] do
            test $"{name} has torchvision's state-dict keys and shapes" {
                use m = Zoo.Create(name) // on CPU: the meta device leaves BatchNorm's running statistics out of the state dict
                Expect.sequenceEqual (List.sort (keysAndShapes m)) (List.sort (readKeys (name + ".keys.txt"))) "keys and shapes"
            }
        for fx in [ "resnet_basic_narrow"; "resnet_bottleneck_narrow" ] do
            test $"{fx}: a torchvision checkpoint loads strictly and reproduces its logits" {
                use m = narrow fx
                let io = Safetensors.Load(Generators.fixture (fx + ".io.safetensors"))
                use _g = torch.no_grad()
                use y = m.call io["input"]
                let err = ZooTests.maxAbs y io["logits"]
                for t in io.Values do t.Dispose()
                Expect.isLessThanOrEqual err 1e-4 $"max abs error {err}"
            }
        test "global pooling: any input size its strides allow; num_classes 0 gives the features" {
            use m = Zoo.Create("resnet18", ModelArgs.Empty.With("num_classes", 7).With("in_chans", 1))
            m.eval()
            use _g = torch.no_grad()
            for h, w in [ 32L, 32L; 50L, 70L; 224L, 96L ] do
                use x = torch.randn(2L, 1L, h, w)
                use y = m.call x
                Expect.equal y.shape [| 2L; 7L |] $"logits at {h}x{w}"
            use f = Zoo.Create("resnet50", ModelArgs.Empty.With("num_classes", 0))
            f.eval()
            use x = torch.randn(1L, 3L, 64L, 64L)
            use y = f.call x
            Expect.equal y.shape [| 1L; 2048L |] "pooled features"
        }
        test "a bad block name is a clear error" {
            let e = ZooTests.argError (fun () -> Zoo.Create("resnet", """{"block": "Basic"}""") |> ignore)
            Expect.stringContains e "\"BasicBlock\" or \"Bottleneck\"" "says what it takes"
        }
        for method in [ "LoRA"; "DoRA" ] do
            test $"{method} on the 3×3 convolutions: merged forward equals unmerged, unload restores the keys" {
                use m = narrow "resnet_bottleneck_narrow"
                let before = keysAndShapes m
                let t = Tuner.Apply(m, LoraConfig(UseDora = (method = "DoRA"), Targets = [| "conv2" |], Rank = 4, Alpha = 8.0))
                Expect.equal (t.Layers.Count) 5 "one tuning layer per block's conv2"
                perturbLoraB m
                m.eval()
                use _g = torch.no_grad()
                use x = torch.randn(2L, 1L, 48L, 48L)
                use base0 = (t.DisableAdapters(); m.call x)
                t.EnableAdapters()
                use y0 = m.call x
                Expect.isGreaterThan (ZooTests.maxAbs y0 base0) 1e-4 "the adapter changes the output"
                let plain = t.MergeAndUnload()
                plain.eval()
                use y1 = (plain :?> torch.nn.Module<torch.Tensor, torch.Tensor>).call x
                let err = ZooTests.maxAbs y0 y1
                Expect.isLessThanOrEqual err 1e-4 $"merged vs unmerged: {err}"
                Expect.sequenceEqual (keysAndShapes plain) before "timm's keys again"
            }
        test "lora summary resnet18 --method adalora --targets conv1 conv2 counts PEFT's Σ init_r·(in·k² + out + 1)" {
            let code, out, err = Generators.runLora [ "summary"; "resnet18"; "--method"; "adalora"; "--targets"; "conv1"; "conv2" ]
            Expect.equal code 0 err
            use m = Zoo.Create("resnet18", ModelArgs.Empty, torch.META)
            let convs = [ for struct (n, c) in m.named_modules() do match c with :? Modules.Conv2d as c when n.EndsWith "conv1" || n.EndsWith "conv2" -> yield c | _ -> () ]
            // init_r = ⌈1.5 · 8⌉ = 12 (the summary's rank 8 is the target rank)
            let want = convs |> List.sumBy (fun c -> 12L * (c.in_channels * c.kernel_size.[0] * c.kernel_size.[1] + c.out_channels + 1L))
            Expect.equal want 415_152L "by hand: the stem 12·212 + the blocks' 16 convs"
            Expect.stringContains out (sprintf "Trainable params: %s" (want.ToString("#,0", System.Globalization.CultureInfo.InvariantCulture))) "the summary's count"
        }
        // AdaLoRA on Conv2d (PEFT 0.20's SVDConv2d); this test pinned the refusal before it existed
        test "AdaLoRA tunes ResNet convolutions: r·(in·k² + out + 1) per conv, a fresh adapter changes nothing, merge is exact" {
            use m = Zoo.Create("resnet", """{"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 3}""")
            m.eval()
            use _g = torch.no_grad()
            use x = torch.randn(2L, 3L, 32L, 32L)
            use before = m.call x
            // conv1 too (the stem's and each block's): timm zero-initialises the BatchNorm after conv2
            let convs = [ for struct (n, c) in m.named_modules() do match c with :? Modules.Conv2d as c when n.EndsWith "conv1" || n.EndsWith "conv2" -> yield c | _ -> () ]
            let t = Tuner.Apply(m, AdaLoraConfig(Targets = [| "conv1"; "conv2" |], InitRank = 4, TargetRank = 2))
            let want = convs |> List.sumBy (fun c -> 4L * (c.in_channels * c.kernel_size.[0] * c.kernel_size.[1] + c.out_channels + 1L))
            Expect.equal (t.TrainableParameters() |> Seq.sumBy (fun p -> p.numel())) want "trainable = Σ r·(in·k² + out + 1)"
            use y0 = m.call x
            Expect.isLessThanOrEqual (ZooTests.maxAbs y0 before) 0.0 "E = 0: a fresh adapter changes nothing"
            for struct (n, p) in m.named_parameters() do
                if n.Contains "lora_" then p.normal_(0.0, 0.1) |> ignore
            use y1 = m.call x
            Expect.isGreaterThan (ZooTests.maxAbs y1 before) 1e-4 "the adapter changes the output"
            let plain = t.MergeAndUnload()
            use y2 = (plain :?> torch.nn.Module<torch.Tensor, torch.Tensor>).call x
            let err = ZooTests.maxAbs y1 y2
            Expect.isLessThanOrEqual err 1e-4 $"merged vs unmerged: {err}"
        }
    ]
