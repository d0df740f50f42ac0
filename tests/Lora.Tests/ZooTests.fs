module Lora.Tests.ZooTests

open System
open System.IO
open Expecto
open TorchSharp
open Lora.Core.Models
open Lora.Core.IO

/// The tensor names in a safetensors file, read from its JSON header (independent of the loader under test).
let headerKeys (path: string) =
    use f = File.OpenRead path
    let lenBytes = Array.zeroCreate<byte> 8
    f.ReadExactly(lenBytes, 0, 8)
    let n = BitConverter.ToInt64(lenBytes, 0) |> int
    let json = Array.zeroCreate<byte> n
    f.ReadExactly(json, 0, n)
    use doc = Text.Json.JsonDocument.Parse(json)
    [ for p in doc.RootElement.EnumerateObject() do if p.Name <> "__metadata__" then yield p.Name ] |> List.sort

let stateKeys (m: torch.nn.Module) =
    [ for kv in m.state_dict() -> kv.Key ] |> List.sort

let paramCount (m: torch.nn.Module) = m.parameters() |> Seq.sumBy (fun p -> p.numel())

/// The message of the ArgumentException that f throws (fails the test if it throws nothing).
let argError (f: unit -> unit) =
    try f (); failwith "expected an ArgumentException" with :? ArgumentException as e -> e.Message

/// Max |a - b| as a float.
let maxAbs (a: torch.Tensor) (b: torch.Tensor) =
    use d = (a - b).abs().max()
    d.item<float32>() |> float

let configOf name = ModelArgs.FromFile(Generators.fixture (name + ".json"))

let countTests =
    testList "parameter counts" [
        for name, args, expected in
            [ "vit_tiny_patch16_224", ModelArgs.Empty, 5_717_416L
              "vit_small_patch16_224", ModelArgs.Empty, 22_050_664L
              "vit_base_patch16_224", ModelArgs.Empty, 86_567_656L
              "vit_base_patch16_224", ModelArgs.Empty.With("num_classes", 100), 85_875_556L
              "vit_large_patch16_224", ModelArgs.Empty, 304_326_632L
              "convnext_tiny", ModelArgs.Empty, 28_589_128L
              "convnext_small", ModelArgs.Empty, 50_223_688L
              "convnext_base", ModelArgs.Empty, 88_591_464L
              // counted by hand from timm 1.0's tiny_vit.py (the issue's 5,391,464 is 1,300 lower; unverified without timm)
              "tiny_vit_5m_224", ModelArgs.Empty, 5_392_764L
              "sam_vit_b", ModelArgs.Empty, 93_735_472L
              "sam_vit_l", ModelArgs.Empty, 312_342_832L
              "sam_vit_h", ModelArgs.Empty, 641_090_608L ] do
            test $"{name} {String.Join(',', args.Keys)}" {
                Expect.equal (Zoo.ParameterCount(name, args)) expected "timm's parameter count"
            }
        test "every registered name builds on the meta device" {
            for n in Zoo.Names do
                Expect.isGreaterThan (Zoo.ParameterCount n) 0L n
        }
        test "meta and cpu counts agree (vit_tiny)" {
            use m = Zoo.Create "vit_tiny_patch16_224"
            Expect.equal (paramCount m) 5_717_416L "cpu count"
        }
    ]

let keyTests =
    testList "state-dict keys" [
        for fx, family in [ "vit_tiny_p4_32", "vit"; "convnext_t_64", "convnext" ] do
            test $"{family} from {fx}.json has exactly timm's keys" {
                use m = Zoo.Create(family, configOf fx)
                Expect.sequenceEqual (stateKeys m) (headerKeys (Generators.fixture (fx + ".safetensors"))) "keys"
            }
    ]

let registryTests =
    testList "registry" [
        test "unknown name lists close matches" {
            let e = argError (fun () -> Zoo.Create "vit_bse_patch16_224" |> ignore)
            Expect.stringContains e "Unknown model 'vit_bse_patch16_224'" "names the input"
            Expect.stringContains e "vit_base_patch16_224" "suggests the close name"
            Expect.isFalse (e.Contains "convnext_tiny") "does not list far names"
            let e2 = argError (fun () -> Zoo.Create "convnext_tyni" |> ignore)
            Expect.stringContains e2 "convnext_tiny" "suggests convnext_tiny"
        }
        test "named models take overrides" {
            let args = ModelArgs.Empty.With("num_classes", 7).With("img_size", 32).With("in_chans", 1)
            use m = Zoo.Create("vit_tiny_patch16_224", args)
            use x = torch.randn(2L, 1L, 32L, 32L)
            use y = m.call x
            Expect.equal y.shape [| 2L; 7L |] "logits shape"
        }
        test "every model names its classifier (timm's pretrained_cfg['classifier']): a module holding every class-count-shaped parameter" {
            // SAM's mask decoder predicts masks whatever the class count; every other model's head has one output per class
            let expected (name: string) = if name.StartsWith "sam" || name = "mobile_sam" then "mask_decoder" elif name = "unet" then "outc" elif name.StartsWith "resnet" then "fc" else "head"
            for name in Zoo.Names do
                use a = Zoo.Create(name, ModelArgs.Empty.With("num_classes", 3L), torch.META)
                use b = Zoo.Create(name, ModelArgs.Empty.With("num_classes", 7L), torch.META)
                let head = Zoo.Classifier a
                Expect.equal head (expected name) $"{name}'s classifier"
                Expect.contains [ for struct (n, _) in a.named_modules() -> n ] head $"{name}: '{head}' is a module"
                let shapes (m: torch.nn.Module) = [ for struct (n, p) in m.named_parameters() -> n, p.shape ]
                let classShaped = [ for (n, s3), (_, s7) in List.zip (shapes a) (shapes b) do if s3 <> s7 then n ]
                for n in classShaped do Expect.stringStarts n (head + ".") $"{name}: the class-count-shaped {n} is in the classifier"
                if head = "mask_decoder" then Expect.isEmpty classShaped $"{name}: no parameter depends on the class count"
                else Expect.isNonEmpty classShaped $"{name}: its classifier has one output per class"
            let e = argError (fun () -> Zoo.Classifier(torch.nn.Linear(2L, 2L)) |> ignore)
            Expect.stringContains e "IHasClassifier" "a module without one is told what to implement"
        }
        test "bad argument type is a clear error" {
            let e = argError (fun () -> Zoo.Create("vit", """{"depth": "two"}""") |> ignore)
            Expect.stringContains e "'depth'" "names the key"
        }
    ]

let parityTests =
    testList "timm parity" [
        for fx, family in [ "vit_tiny_p4_32", "vit"; "convnext_t_64", "convnext" ] do
            test $"{family} reproduces timm's logits for {fx}" {
                use m = Zoo.Create(family, configOf fx)
                StateDict.Load(m, Generators.fixture (fx + ".safetensors")) |> ignore
                m.eval()
                let io = Safetensors.Load(Generators.fixture (fx + ".io.safetensors"))
                use _g = torch.no_grad()
                use y = m.call io["input"]
                let err = maxAbs y io["logits"]
                for t in io.Values do t.Dispose()
                Expect.isLessThanOrEqual err 1e-4 $"max abs error {err}"
            }
    ]

let weightTests =
    testList "weights" [
        test "save then load is the identity, with exactly timm's keys" {
            use dir = new Generators.TempDir()
            use a = Zoo.Create("vit", configOf "vit_tiny_p4_32")
            StateDict.Save(a, dir.File "a.safetensors")
            Expect.sequenceEqual (headerKeys (dir.File "a.safetensors")) (headerKeys (Generators.fixture "vit_tiny_p4_32.safetensors")) "timm's keys"
            use b = Zoo.Create("vit", configOf "vit_tiny_p4_32")
            StateDict.Load(b, dir.File "a.safetensors") |> ignore
            let sa = a.state_dict()
            for kv in b.state_dict() do
                Expect.isTrue (kv.Value.allclose(sa[kv.Key], 0.0, 0.0)) kv.Key
        }
        test "strict load lists every missing, unexpected and wrong-shape key at once" {
            use dir = new Generators.TempDir()
            let src = Safetensors.Load(Generators.fixture "vit_tiny_p4_32.safetensors")
            src.Remove "norm.weight" |> ignore
            src.Remove "blocks.1.mlp.fc2.bias" |> ignore
            src["blocks.0.extra.weight"] <- torch.zeros(3L)
            src["head.weight"] <- torch.zeros(5L, 64L)
            Safetensors.Save(dir.File "bad.safetensors", src)
            use m = Zoo.Create("vit", configOf "vit_tiny_p4_32")
            let msg =
                try StateDict.Load(m, dir.File "bad.safetensors") |> ignore; "" with :? InvalidDataException as e -> e.Message
            for part in [ "2 missing"; "norm.weight"; "blocks.1.mlp.fc2.bias"; "1 unexpected"; "blocks.0.extra.weight"
                          "wrong shape"; "head.weight (file [5, 64], model [10, 64])" ] do
                Expect.stringContains msg part "error lists it"
        }
        testPropertyWithConfig { Generators.config with maxTest = 12 } "save → load reproduces outputs for random small ViT and ConvNeXt configs"
          <| fun (useVit: bool) (depthSeed: FsCheck.PositiveInt) (widthSeed: FsCheck.PositiveInt) ->
            use dir = new Generators.TempDir()
            let depth = 1 + depthSeed.Get % 2
            let heads = 1 + widthSeed.Get % 3
            let name, json, size =
                if useVit then "vit", $"""{{"img_size": 16, "patch_size": 4, "embed_dim": {8 * heads}, "depth": {depth}, "num_heads": {heads}, "num_classes": 3}}""", 16L
                else "convnext", $"""{{"depths": [{depth}, 1], "dims": [{8 * heads}, 16], "num_classes": 3}}""", 32L
            use a = Zoo.Create(name, json)
            use b = Zoo.Create(name, json)
            a.eval(); b.eval()
            StateDict.Save(a, dir.File "m.safetensors")
            StateDict.Load(b, dir.File "m.safetensors") |> ignore
            use _g = torch.no_grad()
            use x = torch.randn(2L, 3L, size, size)
            use ya = a.call x
            use yb = b.call x
            maxAbs ya yb = 0.0
        test "ViT names a wrong input size" {
            use m = Zoo.Create("vit", configOf "vit_tiny_p4_32")
            use x = torch.randn(1L, 3L, 28L, 28L)
            let msg = argError (fun () -> m.call x |> ignore)
            Expect.stringContains msg "[N, 3, 32, 32]" "says what it takes"
            Expect.stringContains msg "[1, 3, 28, 28]" "says what it got"
        }
        test "non-strict load reports missing and unexpected keys" {
            use dir = new Generators.TempDir()
            let src = Safetensors.Load(Generators.fixture "vit_tiny_p4_32.safetensors")
            src.Remove "norm.weight" |> ignore
            src["extra"] <- torch.zeros(3L)
            Safetensors.Save(dir.File "partial.safetensors", src)
            use m = Zoo.Create("vit", configOf "vit_tiny_p4_32")
            let r = StateDict.Load(m, dir.File "partial.safetensors", strict = false)
            Expect.sequenceEqual r.Missing [ "norm.weight" ] "missing"
            Expect.sequenceEqual r.Unexpected [ "extra" ] "unexpected"
        }
    ]

let smallModelTests =
    testList "small models" [
        test "UNet maps images to mask logits of the input size" {
            use m = Zoo.Create("unet", """{"in_chans": 1, "num_classes": 2, "base_width": 8, "depth": 3}""")
            use x = torch.randn(2L, 1L, 36L, 44L)
            use y = m.call x
            Expect.equal y.shape [| 2L; 2L; 36L; 44L |] "mask logits shape"
            let keys = stateKeys m
            for k in [ "inc.conv1.weight"; "downs.2.conv2.weight"; "ups.0.up.weight"; "ups.2.conv.conv1.weight"; "outc.weight" ] do
                Expect.contains keys k "UNet key"
        }
        test "TinyViT forward at small size, with timm's keys" {
            let cfg = """{"num_classes": 5, "embed_dims": [16, 32, 48, 64], "depths": [1, 1, 2, 1], "num_heads": [1, 2, 3, 4], "window_sizes": [4, 4, 4, 2]}"""
            use m = Zoo.Create("tiny_vit", cfg)
            m.eval()
            use x = torch.randn(2L, 3L, 64L, 64L)
            use y = m.call x
            Expect.equal y.shape [| 2L; 5L |] "logits shape"
            let keys = stateKeys m
            for k in [ "patch_embed.conv1.conv.weight"; "patch_embed.conv2.bn.running_var"; "stages.0.blocks.0.conv3.bn.weight"
                       "stages.1.downsample.conv2.conv.weight"; "stages.2.blocks.1.attn.attention_biases"; "stages.2.blocks.1.attn.qkv.weight"
                       "stages.2.blocks.1.attn.norm.weight"; "stages.3.blocks.0.local_conv.conv.weight"; "stages.3.blocks.0.mlp.norm.bias"
                       "stages.3.blocks.0.mlp.fc2.weight"; "head.norm.weight"; "head.fc.bias" ] do
                Expect.contains keys k "timm TinyViT key"
            Expect.isFalse (keys |> List.exists (fun k -> k.Contains "attention_bias_idxs")) "index table is not persistent"
        }
        test "SAM (ViT encoder) segments with and without prompts, with segment-anything's keys" {
            let cfg = """{"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "window_size": 4,
                          "global_attn_indexes": [1], "out_chans": 32, "decoder_num_heads": 4, "decoder_mlp_dim": 64, "iou_head_hidden_dim": 32}"""
            use m = Zoo.Create("sam_vit", cfg)
            m.eval()
            let seg = box m :?> IPromptableSegmenter
            use _g = torch.no_grad()
            use x = torch.randn(2L, 3L, 64L, 64L)
            use y0 = m.call x
            Expect.equal y0.shape [| 2L; 1L; 64L; 64L |] "no-prompt mask logits"
            use boxes = torch.tensor([| 4.f; 4.f; 40.f; 30.f; 10.f; 20.f; 60.f; 60.f |]).view(2L, 4L)
            use pts = torch.tensor([| 20.f; 20.f; 50.f; 50.f; 5.f; 5.f; 30.f; 40.f |]).view(2L, 2L, 2L)
            use lbl = torch.tensor([| 1L; 0L; 1L; 1L |]).view(2L, 2L)
            use yb = seg.Segment(x, boxes, null, null)
            use yp = seg.Segment(x, null, pts, lbl)
            use ybp = seg.Segment(x, boxes, pts, lbl)
            for y in [ yb; yp; ybp ] do Expect.equal y.shape [| 2L; 1L; 64L; 64L |] "prompted mask logits"
            Expect.isGreaterThan (maxAbs y0 yb) 1e-6 "a box changes the mask"
            Expect.isGreaterThan (maxAbs yb ybp) 1e-6 "points change the mask"
            use x96 = torch.randn(1L, 3L, 96L, 80L)
            use y96 = m.call x96
            Expect.equal y96.shape [| 1L; 1L; 96L; 80L |] "other input sizes are resized in and out"
            let keys = stateKeys m
            for k in [ "image_encoder.patch_embed.proj.weight"; "image_encoder.pos_embed"; "image_encoder.blocks.1.attn.qkv.weight"
                       "image_encoder.blocks.0.mlp.lin1.weight"; "image_encoder.neck.0.weight"; "image_encoder.neck.3.bias"
                       "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"; "prompt_encoder.point_embeddings.3.weight"
                       "prompt_encoder.not_a_point_embed.weight"; "prompt_encoder.no_mask_embed.weight"; "prompt_encoder.mask_downscaling.6.weight"
                       "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight"; "mask_decoder.transformer.layers.0.mlp.lin2.bias"
                       "mask_decoder.transformer.layers.0.norm4.weight"; "mask_decoder.transformer.final_attn_token_to_image.q_proj.weight"
                       "mask_decoder.transformer.norm_final_attn.weight"; "mask_decoder.iou_token.weight"; "mask_decoder.mask_tokens.weight"
                       "mask_decoder.output_upscaling.0.weight"; "mask_decoder.output_upscaling.1.weight"; "mask_decoder.output_upscaling.3.weight"
                       "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight"; "mask_decoder.iou_prediction_head.layers.2.bias" ] do
                Expect.contains keys k "segment-anything key"
            Expect.contains keys "image_encoder.blocks.0.attn.rel_pos_h" "rel-pos table (windowed block)"
            let sd = m.state_dict()
            let shapeOf (k: string) = sd[k].shape
            Expect.equal (shapeOf "image_encoder.blocks.0.attn.rel_pos_w") [| 7L; 16L |] "window 4 → 2·4−1 rows, head_dim 16"
            Expect.equal (shapeOf "image_encoder.blocks.1.attn.rel_pos_h") [| 15L; 16L |] "global block: grid 8 → 15 rows"
        }
        test "SAM with a TinyViT encoder (MobileSAM-like) segments at small size" {
            let cfg = """{"img_size": 64, "embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 4],
                          "window_sizes": [4, 4, 4, 2], "out_chans": 32, "decoder_num_heads": 4, "decoder_mlp_dim": 64, "iou_head_hidden_dim": 32}"""
            use m = Zoo.Create("sam_tiny_vit", cfg)
            m.eval()
            use _g = torch.no_grad()
            use x = torch.randn(2L, 3L, 64L, 64L)
            use boxes = torch.tensor([| 4.f; 4.f; 40.f; 30.f; 10.f; 20.f; 60.f; 60.f |]).view(2L, 4L)
            use y = (box m :?> IPromptableSegmenter).Segment(x, boxes, null, null)
            Expect.equal y.shape [| 2L; 1L; 64L; 64L |] "mask logits"
            Expect.contains (stateKeys m) "image_encoder.stages.2.blocks.0.attn.attention_biases" "TinyViT trunk keys"
            Expect.equal (Seq.length (m :?> Sam).EncoderBlocks) 3 "adapter hosts in the encoder"
        }
        test "a targetable Linear can be replaced the way LoRA injection does (register_module + same-named field)" {
            use m = Zoo.Create("vit", configOf "vit_tiny_p4_32") :?> VisionTransformer
            m.eval()
            use _g = torch.no_grad()
            use x = torch.randn(1L, 3L, 32L, 32L)
            use y0 = m.call x
            let attn = m.Blocks[0].named_children() |> Seq.find (fun struct (n, _) -> n = "attn") |> fun struct (_, a) -> a
            let field = attn.GetType().GetField("qkv", Reflection.BindingFlags.NonPublic ||| Reflection.BindingFlags.Instance)
            Expect.equal field.FieldType typeof<torch.nn.Module<torch.Tensor, torch.Tensor>> "field typed Module<Tensor,Tensor>"
            let zeroQkv = torch.nn.Linear(64L, 192L)
            zeroQkv.weight.zero_() |> ignore
            zeroQkv.bias.zero_() |> ignore
            attn.register_module("qkv", null)
            attn.register_module("qkv", zeroQkv)
            field.SetValue(attn, zeroQkv)
            use y1 = m.call x
            Expect.isGreaterThan (maxAbs y0 y1) 1e-5 "forward uses the replaced child"
            let p = m.state_dict()["blocks.0.attn.qkv.weight"]
            Expect.equal (p.abs().sum().item<float32>()) 0.0f "state_dict sees the replaced child"
        }
        test "MobileSAM (original TinyViT names, stride 16) segments at small size" {
            let cfg = """{"img_size": 64, "embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 4],
                          "window_sizes": [4, 4, 4, 2], "out_chans": 32, "decoder_num_heads": 4, "decoder_mlp_dim": 64, "iou_head_hidden_dim": 32}"""
            use m = Zoo.Create("mobile_sam", cfg)
            m.eval()
            use _g = torch.no_grad()
            use x = torch.randn(2L, 3L, 64L, 64L)
            use boxes = torch.tensor([| 4.f; 4.f; 40.f; 30.f; 10.f; 20.f; 60.f; 60.f |]).view(2L, 4L)
            use y = (box m :?> IPromptableSegmenter).Segment(x, boxes, null, null)
            Expect.equal y.shape [| 2L; 1L; 64L; 64L |] "mask logits"
            let keys = stateKeys m
            for k in [ "image_encoder.patch_embed.seq.0.c.weight"; "image_encoder.patch_embed.seq.2.bn.running_mean"
                       "image_encoder.layers.0.blocks.0.conv3.c.weight"; "image_encoder.layers.0.downsample.conv2.c.weight"
                       "image_encoder.layers.2.blocks.0.attn.attention_biases"; "image_encoder.layers.3.blocks.0.local_conv.c.weight"
                       "image_encoder.layers.3.blocks.0.mlp.fc1.weight"; "image_encoder.norm_head.weight"; "image_encoder.head.weight"
                       "image_encoder.neck.2.weight" ] do
                Expect.contains keys k "MobileSAM key"
            Expect.isFalse (keys |> List.exists (fun k -> k.StartsWith "image_encoder.layers.3.downsample")) "no downsample after the last layer"
        }
        test "SAM encoder blocks (ViT and TinyViT) take adapters that change the mask and come off cleanly" {
            for name in [ "sam_vit"; "sam_tiny_vit" ] do
                let cfg = """{"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "window_size": 4, "global_attn_indexes": [1],
                              "embed_dims": [16, 32, 48, 64], "depths": [1, 1, 1, 1], "window_sizes": [4, 4, 4, 2],
                              "out_chans": 32, "decoder_num_heads": 4, "decoder_mlp_dim": 64, "iou_head_hidden_dim": 32}"""
                let args = ModelArgs.FromJson(cfg)
                let args = if name = "sam_tiny_vit" then args.With("num_heads", [| box 1.0; box 2.0; box 3.0; box 4.0 |]) else args
                use m = Zoo.Create(name, args) :?> Sam
                m.eval()
                use _g = torch.no_grad()
                use x = torch.randn(1L, 3L, 64L, 64L)
                use y0 = m.call x
                let blocks = m.EncoderBlocks |> Seq.toList
                // block widths: 64 throughout the ViT; the TinyViT's attention stages are 32, 48, 64 wide
                let dimsOfBlocks = if name = "sam_vit" then List.replicate blocks.Length 64L else [ 32L; 48L; 64L ]
                for b, d in List.zip blocks dimsOfBlocks do
                    b.SetAdapters(torch.nn.Linear(d, d), torch.nn.Linear(d, d), 0.5)
                Expect.isTrue (stateKeys m |> List.exists (fun k -> k.EndsWith "adapter_mlp.weight")) $"{name}: adapter keys"
                use y1 = m.call x
                Expect.isGreaterThan (maxAbs y0 y1) 1e-6 $"{name}: adapters change the mask"
                for b in blocks do b.SetAdapters(null, null, 1.0)
                use y2 = m.call x
                Expect.equal (maxAbs y0 y2) 0.0 $"{name}: removing adapters restores the mask"
        }
        test "adapters register under adapter_attn / adapter_mlp and change the output; removing restores it" {
            use m = Zoo.Create("vit", configOf "vit_tiny_p4_32") :?> VisionTransformer
            m.eval()
            use x = torch.randn(1L, 3L, 32L, 32L)
            use _g = torch.no_grad()
            use y0 = m.call x
            let blk = m.Blocks[0] :> Lora.Core.Tuning.IAdapterHost
            blk.SetAdapters(torch.nn.Linear(64L, 64L), torch.nn.Linear(64L, 64L), 0.5)
            let keys = stateKeys m
            Expect.contains keys "blocks.0.adapter_attn.weight" "attn adapter key"
            Expect.contains keys "blocks.0.adapter_mlp.bias" "mlp adapter key"
            use y1 = m.call x
            Expect.isGreaterThan (maxAbs y0 y1) 1e-4 "adapters change the output"
            blk.SetAdapters(null, null, 1.0)
            use y2 = m.call x
            Expect.equal (maxAbs y0 y2) 0.0 "removed adapters restore the output"
            Expect.sequenceEqual (stateKeys m) (headerKeys (Generators.fixture "vit_tiny_p4_32.safetensors")) "keys restored"
        }
    ]

let tests = testList "Zoo" [ smallModelTests;  countTests; keyTests; registryTests; parityTests; weightTests ]

/// Lora.Dsl validates model names without referencing Lora.Core: its list must be the zoo's.
let dslKnowsTheZoo =
    test "the Dsl's list of model names is exactly the zoo's" {
        Expect.equal (Set.ofList Lora.Dsl.ZooNames.all) (Set.ofSeq Zoo.Names) "same names"
    }
