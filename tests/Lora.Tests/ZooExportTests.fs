/// ONNX export of zoo models (Lora.Core.Onnx.ZooExport), checked with ONNX Runtime as the reference.
module Lora.Tests.ZooExportTests

open System
open System.IO
open Expecto
open TorchSharp
open Microsoft.ML.OnnxRuntime
open Lora.Core.Models
open Lora.Core.IO
open Lora.Core.Tuning
open Lora.Core.Onnx

type M = torch.nn.Module<torch.Tensor, torch.Tensor>

/// ONNX Runtime's output `output` for the input `input` = x.
let ortRun (path: string) (x: torch.Tensor) =
    use session = new InferenceSession(path)
    let data = x.contiguous().data<float32>().ToArray()
    use input = OrtValue.CreateTensorValueFromMemory(data, x.shape)
    use opts = new RunOptions()
    use outputs = session.Run(opts, [| "input" |], [| input |], [| "output" |])
    let o = outputs[0]
    let shape = o.GetTensorTypeAndShape().Shape
    torch.tensor(o.GetTensorDataAsSpan<float32>().ToArray()).reshape(shape)

/// Max |a − b| relative to the largest |a|.
let relErr (a: torch.Tensor) (b: torch.Tensor) =
    use d = (a - b).abs().max()
    use m = a.abs().max()
    float (d.item<float32>()) / float (m.item<float32>())

let eval (m: M) (x: torch.Tensor) =
    m.eval() |> ignore
    use _g = torch.no_grad()
    m.forward x

/// Exports m for inputs shaped like x, runs the file in ONNX Runtime on x and returns the relative error against m.
let exportAndCompare (m: M) (x: torch.Tensor) =
    use dir = new Generators.TempDir()
    let path = dir.File "model.onnx"
    ZooExport.Export(m, x.shape, path)
    use expected = eval m x
    use got = ortRun path x
    Expect.equal got.shape expected.shape "output shape"
    relErr expected got

/// Random BatchNorm statistics and affine parameters (fresh ones are the identity, which would hide a wrong export).
let perturbNorms (m: torch.nn.Module) =
    use _g = torch.no_grad()
    for struct (_, sub) in m.named_modules() do
        match sub with
        | :? TorchSharp.Modules.BatchNorm2d as bn ->
            bn.weight.uniform_(0.5, 1.5) |> ignore
            bn.bias.normal_(0.0, 0.1) |> ignore
            bn.running_mean.normal_(0.0, 0.1) |> ignore
            bn.running_var.uniform_(0.5, 1.5) |> ignore
        | _ -> ()

let loaded family fx =
    let m = Zoo.Create(family, ModelArgs.FromFile(Generators.fixture (fx + ".json")))
    StateDict.Load(m, Generators.fixture (fx + ".safetensors")) |> ignore
    m

let tol = 1e-4

let tests =
    testList "ZooExport" [
        test "ViT at the quickstart's size (28 px, patch 4, 1 channel): ONNX Runtime equals the forward" {
            use m = Zoo.Create("vit", """{"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 4, "num_classes": 5}""")
            use x = torch.randn(2L, 1L, 28L, 28L)
            let err = exportAndCompare m x
            Expect.isLessThanOrEqual err tol $"relative error {err}"
        }
        for family, fx, size, chans in [ "vit", "vit_tiny_p4_32", 32L, 3L; "convnext", "convnext_t_64", 64L, 3L
                                         "resnet", "resnet_basic_narrow", 64L, 3L; "resnet", "resnet_bottleneck_narrow", 48L, 1L ] do
            test $"{family} with the timm/torchvision weights of {fx}: ONNX Runtime equals the forward" {
                use m = loaded family fx
                use x = torch.randn(2L, chans, size, size)
                let err = exportAndCompare m x
                Expect.isLessThanOrEqual err tol $"relative error {err}"
            }
        test "resnet18 at 64 px (random BatchNorm statistics); the batch size stays free in the file" {
            use m = Zoo.Create("resnet18", ModelArgs.Empty.With("num_classes", 10))
            perturbNorms m
            use dir = new Generators.TempDir()
            let path = dir.File "r18.onnx"
            ZooExport.Export(m, [| 1L; 3L; 64L; 64L |], path)
            use x = torch.randn(3L, 3L, 64L, 64L)
            use expected = eval m x
            use got = ortRun path x
            let err = relErr expected got
            Expect.isLessThanOrEqual err tol $"relative error {err} at batch 3 (exported at batch 1)"
        }
        test "after LoRA merge-and-unload (ViT qkv+fc1, ConvNeXt fc1+fc2, ResNet DoRA on conv2): ONNX Runtime equals the tuned forward" {
            for family, fx, targets, meth, size, chans in
                [ "vit", "vit_tiny_p4_32", [| "qkv"; "fc1" |], false, 32L, 3L
                  "convnext", "convnext_t_64", [| "fc1"; "fc2" |], false, 64L, 3L
                  "resnet", "resnet_bottleneck_narrow", [| "conv2" |], true, 48L, 1L ] do
                use m = loaded family fx
                let t = Tuner.Apply(m, LoraConfig(UseDora = meth, Targets = targets, Rank = 4, Alpha = 8.0))
                ResNetTests.perturbLoraB m
                use x = torch.randn(2L, chans, size, size)
                use tuned = eval m x
                Expect.isFalse (ZooExport.CanExport m) $"{family}: an unmerged tuned model is refused"
                let plain = t.MergeAndUnload() :?> M
                use dir = new Generators.TempDir()
                let path = dir.File "merged.onnx"
                ZooExport.Export(plain, x.shape, path)
                use got = ortRun path x
                let err = relErr tuned got
                Expect.isLessThanOrEqual err tol $"{family}: relative error {err}"
        }
        testPropertyWithConfig { Generators.config with maxTest = 9 } "random small ViT, ConvNeXt and ResNet configs: ONNX Runtime equals the forward"
          <| fun (familySeed: FsCheck.NonNegativeInt) (depthSeed: FsCheck.PositiveInt) (widthSeed: FsCheck.PositiveInt) (oneChannel: bool) ->
            let depth = 1 + depthSeed.Get % 2
            let w = 1 + widthSeed.Get % 3
            let chans = if oneChannel then 1L else 3L
            let name, json, size =
                match familySeed.Get % 3 with
                | 0 -> "vit", $"""{{"img_size": 16, "patch_size": 4, "in_chans": {chans}, "embed_dim": {8 * w}, "depth": {depth}, "num_heads": {w}, "num_classes": 3}}""", 16L
                | 1 -> "convnext", $"""{{"in_chans": {chans}, "depths": [{depth}, 1], "dims": [{8 * w}, 16], "num_classes": 3}}""", 32L
                | _ -> "resnet", $"""{{"in_chans": {chans}, "block": "{if w = 2 then "Bottleneck" else "BasicBlock"}", "layers": [{depth}, 1, 1], "channels": [{4 * w}, 8, 12], "num_classes": 3}}""", 40L
            use m = Zoo.Create(name, json)
            perturbNorms m
            use x = torch.randn(2L, chans, size, size)
            exportAndCompare m x <= tol
        for name, config in [ "bottleneck adapter", BottleneckAdapterConfig(Width = 6) :> TuningConfig
                              "AdaptFormer", AdaptFormerConfig(Width = 6)
                              "VPT shallow", VptConfig(Tokens = 3)
                              "VPT deep", VptConfig(Tokens = 3, Deep = true)
                              "Convpass (s 0.5)", ConvpassConfig(Width = 6, Scale = 0.5) ] do
            test $"{name} (not mergeable): its ops go into the graph, ONNX Runtime equals the tuned forward" {
                use m = Zoo.Create("vit", """{"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 4, "num_classes": 5}""")
                let t = Tuner.Apply(m, config)
                // non-zero adapters (AdaptFormer's up projection starts at zero, which would hide a wrong export)
                use g = new torch.Generator(7UL)
                use _g = torch.no_grad()
                for p in t.TrainableParameters() do
                    use r = torch.randn(p.shape, generator = g)
                    p.copy_(r * 0.2f) |> ignore
                use x = torch.randn(3L, 1L, 28L, 28L)
                Expect.isNull (ZooExport.Problem m) "exportable"
                let err = exportAndCompare m x
                Expect.isLessThanOrEqual err tol $"relative error {err}"
            }
        test "Convpass (random weights, s 2, a trained head): the bypass changes the output and ONNX Runtime equals the tuned forward at batch 1 and 3" {
            use m = Zoo.Create("vit", """{"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 4, "num_classes": 5}""")
            use x = torch.randn(3L, 1L, 28L, 28L)
            use y0 = eval m x
            let t = Tuner.Apply(m, ConvpassConfig(Width = 4, Scale = 2.0, ModulesToSave = [| "head" |]))
            // random non-zero up projections and convs (a fresh bypass adds nothing, which would hide a wrong export)
            use g = new torch.Generator(11UL)
            do
                use _g = torch.no_grad()
                for p in t.TrainableParameters() do
                    use r = torch.randn(p.shape, generator = g)
                    p.copy_(r * 0.2f) |> ignore
            use y = eval m x
            let changed = relErr y0 y
            Expect.isGreaterThan changed 1e-2 $"the bypasses matter (relative change {changed})"
            use dir = new Generators.TempDir()
            let path = dir.File "convpass.onnx"
            ZooExport.Export(m, [| 1L; 1L; 28L; 28L |], path)
            use got = ortRun path x
            let err = relErr y got
            Expect.isLessThanOrEqual err tol $"relative error {err} at batch 3 (exported at batch 1)"
            let model = Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes path)
            let names = set [ for i in model.Graph.Initializer -> i.Name ]
            Expect.contains names "blocks.1.convpass_mlp.adapter_conv.weight" "the bypass weights under their checkpoint keys"
            Expect.isTrue (model.Graph.Node |> Seq.exists (fun n -> n.OpType = "Sigmoid")) "QuickGELU's Sigmoid"
        }
        for variant in [ FactVariant.Tt; FactVariant.Tk ] do
            test $"FacT-{variant} (mergeable): after merge-and-unload ONNX Runtime equals the tuned forward" {
                use m = Zoo.Create("vit", """{"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2, "num_heads": 4, "num_classes": 5}""")
                let t = Tuner.Apply(m, FactConfig(Rank = 3, Variant = variant, Scale = 0.7))
                // random factors (V starts at zero, which would hide a merge that did nothing)
                use g = new torch.Generator(5UL)
                do
                    use _g = torch.no_grad()
                    for p in t.TrainableParameters() do
                        use r = torch.randn(p.shape, generator = g)
                        p.copy_(r * 0.2f) |> ignore
                use x = torch.randn(2L, 1L, 28L, 28L)
                use tuned = eval m x
                Expect.isFalse (ZooExport.CanExport m) "unmerged FacT is refused"
                let plain = t.MergeAndUnload() :?> M
                let err = exportAndCompare plain x
                use merged = eval plain x
                Expect.isLessThanOrEqual (relErr tuned merged) tol "merged = tuned"
                Expect.isLessThanOrEqual err tol $"relative error {err}"
            }
        test "Convpass on SAM's and TinyViT's encoders: the refusal says Convpass exports on the ViT family only" {
            let sam = Zoo.Create("sam_vit", ModelArgs.FromJson """{"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "window_size": 2, "global_attn_indexes": [1], "out_chans": 16, "decoder_num_heads": 2, "decoder_mlp_dim": 32, "iou_head_hidden_dim": 16}""", torch.CPU)
            let tiny = Zoo.Create("tiny_vit", ModelArgs.FromJson """{"num_classes": 3, "embed_dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 2], "window_sizes": [4, 4, 4, 2]}""", torch.CPU)
            use dir = new Generators.TempDir()
            for m, kind in [ sam, "Sam"; tiny, "TinyVit" ] do
                Tuner.Apply(m, ConvpassConfig(Width = 2)) |> ignore
                let why = ZooExport.Problem m
                Expect.stringContains why kind "names the model type"
                Expect.stringContains why "Convpass bypasses export on the ViT family only" "says Convpass is not exported there"
                Expect.throwsT<NotSupportedException> (fun () -> ZooExport.Export(m, [| 1L; 3L; 32L; 32L |], dir.File "m.onnx")) "Export refuses it"
                Expect.isFalse (File.Exists(dir.File "m.onnx")) "no file"
                m.Dispose()
        }
        test "initializers carry timm's state-dict keys" {
            use m = loaded "resnet" "resnet_basic_narrow"
            use dir = new Generators.TempDir()
            let path = dir.File "m.onnx"
            ZooExport.Export(m, [| 1L; 3L; 64L; 64L |], path)
            let model = Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes path)
            let names = set [ for i in model.Graph.Initializer -> i.Name ]
            for kv in m.state_dict() do
                if not (kv.Key.EndsWith "num_batches_tracked") then Expect.contains names kv.Key "initializer"
            Expect.equal model.OpsetImport[0].Version 17L "opset 17"
            Expect.equal (ZooExport.DefaultInputShape m) [| 1L; 3L; 224L; 224L |] "ResNet's default input shape"
            use vit = Zoo.Create("vit", """{"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 16, "depth": 1, "num_heads": 2}""")
            Expect.equal (ZooExport.DefaultInputShape vit) [| 1L; 1L; 28L; 28L |] "a ViT's own size"
        }
        test "an unmergeable adapter, an unmerged LoRA and an unknown family: clear errors naming the module, no file written" {
            use dir = new Generators.TempDir()
            let path = dir.File "x.onnx"
            let refuse (m: torch.nn.Module) (shape: int64[]) =
                Expect.isFalse (ZooExport.CanExport m) "CanExport says no"
                Expect.throwsT<NotSupportedException> (fun () -> ZooExport.Export(m, shape, path)) "Export refuses it"
                Expect.isFalse (File.Exists path) "no file"
                Expect.isEmpty (Directory.GetFiles dir.Path) "no temporary file left"
                ZooExport.Problem m |> Option.ofObj |> Option.defaultValue ""
            use vit = Zoo.Create("vit", """{"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "num_classes": 3}""")
            // (bottleneck adapters export since their ops go into the graph, with the active copy of
            // a trained head; disabled, the head's wrapper has no copy to write)
            let tuned = Tuner.Apply(vit, BottleneckAdapterConfig(ModulesToSave = [| "head" |]))
            tuned.DisableAdapters()
            let msg = refuse vit [| 1L; 3L; 16L; 16L |]
            Expect.stringContains msg "'head'" "names the module"
            Expect.stringContains msg "modules-to-save wrapper" "says what to do"
            use cnx = Zoo.Create("convnext", """{"depths": [1, 1], "dims": [8, 16], "num_classes": 3}""")
            Tuner.Apply(cnx, LoraConfig(Targets = [| "fc1" |], Rank = 2)) |> ignore
            let msg2 = refuse cnx [| 1L; 3L; 32L; 32L |]
            Expect.stringContains msg2 "stages.0.blocks.0.mlp.fc1" "names the layer"
            Expect.stringContains msg2 "merge" "says to merge first"
            use unet = Zoo.Create("unet", """{"base_width": 4, "depth": 2}""")
            Expect.stringContains (refuse unet [| 1L; 3L; 16L; 16L |]) "UNet" "names the model type"
        }
        test "a bad input shape is a clear error, and export leaves the model's mode and an existing file alone" {
            use dir = new Generators.TempDir()
            let path = dir.File "m.onnx"
            File.WriteAllText(path, "old")
            use m = Zoo.Create("vit", """{"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "num_classes": 3}""")
            m.train()
            Expect.throwsT<ArgumentException> (fun () -> ZooExport.Export(m, [| 1L; 3L; 20L; 20L |], path)) "the ViT's size check speaks"
            Expect.equal (File.ReadAllText path) "old" "the old file is untouched"
            Expect.throwsT<ArgumentException> (fun () -> ZooExport.Export(m, [| 3L; 16L; 16L |], path)) "a shape of rank 3 is refused"
            ZooExport.Export(m, [| 1L; 3L; 16L; 16L |], path)
            Expect.isTrue m.training "still in training mode"
            Expect.notEqual (File.ReadAllText path) "old" "replaced on success"
        }
    ]
