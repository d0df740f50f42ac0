/// Convpass and FacT (Jie & Deng 2022, 2023): Convpass's bypass against its formula, fresh = base,
/// checkpoints, counts and refusals; FacT's layer (TT and TK, FsCheck over widths, ranks and slice
/// layouts, float64 and float32) against a slice-by-slice reference, merge = unmerged, unmerge
/// exact; both on the zoo's ViT and SAM's ViT encoder, and what validate says elsewhere.
module Lora.Tests.VisionMethodTests

open System.IO
open Expecto
open TorchSharp
open TorchSharp.Modules
open Lora.Core.Tuning
open Lora.Core.Models
open Lora.Tests.Generators
open Lora.Tests.MethodZooTests

let private vit () =
    let args = ModelArgs.Empty.With("img_size", 8L).With("patch_size", 4L).With("embed_dim", 16L).With("depth", 2L).With("num_heads", 2L).With("num_classes", 3L)
    Zoo.Create("vit", args, torch.CPU)

let private samJson =
    """{"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "window_size": 2, "global_attn_indexes": [1],
        "out_chans": 16, "decoder_num_heads": 2, "decoder_mlp_dim": 32, "iou_head_hidden_dim": 16}"""

let private sam () = Zoo.Create("sam_vit", ModelArgs.FromJson samJson, torch.CPU)

/// Two models with the same weights, in eval mode.
let private twinOf (make: unit -> torch.nn.Module<torch.Tensor, torch.Tensor>) =
    let a, b = make (), make ()
    let sa = a.state_dict ()
    do
        use _ = torch.no_grad ()
        for KeyValue(k, v) in b.state_dict () do v.copy_(sa.[k]) |> ignore
    a.eval (); b.eval ()
    a, b

let private fwd (m: #torch.nn.Module) (x: torch.Tensor) = ((m :> torch.nn.Module) :?> torch.nn.Module<torch.Tensor, torch.Tensor>).forward x

let private quickGelu (x: torch.Tensor) = x * torch.sigmoid (1.702 * x)

/// The reference code's Convpass.forward on [B, lead + h·w, C] (class token, and here prompts too, each a 1×1 image).
let private convpassRef (m: ConvpassModule) (x: torch.Tensor) (lead: int64) (side: int64) =
    let b = x.shape.[0]
    let d = quickGelu (torch.nn.functional.linear(x, m.adapter_down.weight, m.adapter_down.bias))
    let r = d.shape.[2]
    let conv (t: torch.Tensor) = torch.nn.functional.conv2d(t, m.adapter_conv.weight, m.adapter_conv.bias, padding = [| 1L; 1L |])
    let patch = conv(d.narrow(1L, lead, side * side).reshape(b, side, side, r).permute(0L, 3L, 1L, 2L)).permute(0L, 2L, 3L, 1L).reshape(b, side * side, r)
    let singles = [| for i in 0L .. lead - 1L -> conv(d.narrow(1L, i, 1L).reshape(b, 1L, 1L, r).permute(0L, 3L, 1L, 2L)).permute(0L, 2L, 3L, 1L).reshape(b, 1L, r) |]
    let h = quickGelu (torch.cat(Array.append singles [| patch |], 1L))
    torch.nn.functional.linear(h, m.adapter_up.weight, m.adapter_up.bias)

/// Slice-by-slice FacT: ΔW block (j, l) = s · V Σ_jl U, Σ_jl = TT's block or TK's (C ×₃ p_t)ᵀ.
let private factDelta (l: FactLayer) (f: FactFactors) (cfg: FactConfig) (offset: int) =
    let d = f.Width
    let r = int64 cfg.Rank
    let mo, mi = l.Base.out_features / d, l.Base.in_features / d
    let rows =
        [| for j in 0L .. mo - 1L ->
               torch.cat([| for i in 0L .. mi - 1L ->
                                let s =
                                    if cfg.Variant = FactVariant.Tt then (l.fact_s.Parameter "default").narrow(0L, j * r, r).narrow(1L, i * r, r)
                                    else
                                        let p = f.FacTp.narrow(1L, int64 offset + j * mi + i, 1L)     // [r, 1]
                                        f.FacTc.matmul(p).squeeze(-1L).t()
                                f.FacTv.matmul(s).matmul(f.FacTu) * cfg.Scale |], 1L) |]
    torch.cat(rows, 0L)

let private convpassTests =
    testList "Convpass" [
        testProp "the bypass is the reference code's formula (class token, and prompts, as 1×1 images; BHWC grids as SAM's)" (fun (seed: int) (a: byte) (b: byte) (c: byte) (f64: bool) ->
            let dt = if f64 then torch.float64 else torch.float32
            let dim, width, side, lead = int64 (int a % 6 + 2), int64 (int b % 4 + 1), int64 (int c % 3 + 1), int64 (int a % 3)
            let m = new ConvpassModule(dim, width, 0.0, dt)
            randomise (m.parameters ()) seed
            m.eval ()
            use g = new torch.Generator(uint64 (abs seed))
            use x = torch.randn([| 2L; lead + side * side; dim |], dtype = dt, generator = g)
            use y = m.ForwardTokens(x, side, side)
            use yr = convpassRef m x lead side
            close $"tokens, {lead} outside the {side}×{side} grid" dt y yr
            use grid = torch.randn([| 2L; side; side; dim |], dtype = dt, generator = g)
            use yg = m.forward grid
            use gr = convpassRef m (grid.reshape(2L, side * side, dim)) 0L side
            close "BHWC grid" dt (yg.reshape(2L, side * side, dim)) gr)
        test "the paper's initialisation: the conv is the identity at its centre tap, up is zero" {
            let fresh = new ConvpassModule(6L, 3L)
            let centre = fresh.adapter_conv.weight.index(torch.TensorIndex.Colon, torch.TensorIndex.Colon, torch.TensorIndex.Single 1L, torch.TensorIndex.Single 1L)
            Expect.isTrue (same centre (torch.eye 3L)) "the paper's conv init: identity at the centre tap"
            Expect.equal (fresh.adapter_up.weight.abs().sum().ToDouble()) 0.0 "up is zero: a fresh bypass adds nothing"
        }
        for family, make, x in [ "vit", vit, (fun () -> torch.randn(2L, 3L, 8L, 8L)); "sam_vit", sam, (fun () -> torch.randn(1L, 3L, 32L, 32L)) ] do
            test $"Convpass on {family}: fresh is the base; trained changes it; the checkpoint round-trips; it refuses to merge; counts are the formula" {
                let a, b = twinOf make
                use x = x ()
                use y0 = (use _ = torch.no_grad () in fwd a x)
                use y00 = fwd a x
                close "the base is deterministic" torch.float32 y00 y0
                let ta = Tuner.Apply(a, ConvpassConfig(Width = 4, Scale = 0.5))
                a.eval ()
                // under no_grad: with trainable bypasses the activations need grad, and CPU attention
                // may then pick another kernel (SAM's rel-pos bias), which differs in the last bits
                use yFresh = (use _ = torch.no_grad () in fwd a x)
                Expect.isTrue (same yFresh y0) "a fresh Convpass changes nothing"
                randomise (ta.Attached("default").Parameters()) 3
                use ya = fwd a x
                Expect.isGreaterThan (relErr ya y0) 1e-6 "trained bypasses change the output"
                use dir = new TempDir()
                AdapterCheckpoint.Save(ta, dir.Path)
                let keys = AdapterCheckpoint.StateDict(ta).Keys |> Set.ofSeq
                Expect.isTrue (keys |> Set.exists (fun k -> k.EndsWith "blocks.1.convpass_attn.adapter_conv.weight")) "the reference's key names"
                let json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))).AsObject()
                Expect.equal (PeftConfigTests.violations json) [] "its adapter_config.json passes its rules"
                let tb = AdapterCheckpoint.Load(b, dir.Path)
                b.eval ()
                use yb = fwd b x
                close "loaded" torch.float32 yb ya
                Expect.stringContains (Expect.throwsC (fun () -> ta.Merge()) (fun e -> e.Message)) "not mergeable" "says why"
                // 2 blocks × 2 bypasses × (down C·d + d, conv 9d² + d, up d·C + C), C 16, d 4
                let c, d = 16L, 4L
                Expect.equal (tb.Summary().Trainable) (2L * 2L * (c * d + d + 9L * d * d + d + d * c + c)) "2·(2Cd + 9d² + 2d + C) per block"
                ta.DisableAdapters()
                use yOff = fwd a x
                Expect.isTrue (same yOff y0) "disabled: the base model exactly"
            }
        test "Convpass on TinyViT: a bypass per attention block, sized to its stage; fresh is the base; counts are the formula" {
            let make () = Zoo.Create("tiny_vit", ModelArgs.FromJson """{"num_classes": 3, "embed_dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 2], "window_sizes": [4, 4, 4, 2]}""", torch.CPU)
            let a, _ = twinOf make
            use x = torch.randn(2L, 3L, 64L, 64L)
            use y0 = (use _ = torch.no_grad () in fwd a x)
            let t = Tuner.Apply(a, ConvpassConfig(Width = 2))
            a.eval ()
            use yFresh = (use _ = torch.no_grad () in fwd a x)
            Expect.isTrue (same yFresh y0) "a fresh Convpass changes nothing"
            randomise (t.Attached("default").Parameters()) 2
            use ya = fwd a x
            Expect.isGreaterThan (relErr ya y0) 1e-6 "trained bypasses change the output"
            // the attention stages 1-3 (widths 16, 16, 32; stage 0 is MBConv), one block each
            let per c = 2L * (2L * c * 2L + 9L * 4L + 2L * 2L + c)
            Expect.equal (t.Summary().Trainable) (per 16L + per 16L + per 32L) "2·(2Cd + 9d² + 2d + C) per block, C per stage"
            let resnet = Zoo.Create("resnet18", ModelArgs.Empty, torch.CPU)
            Expect.stringContains (Tuner.Match(resnet, ConvpassConfig()).Errors |> String.concat "; ") "tiny_vit, sam_vit" "names the families it fits"
        }
    ]

let private factTests =
    testList "FacT" [
        testProp "FacT layer (TT, TK): y = base(x) + x ΔWᵀ with ΔW slice-by-slice s · V Σ U; merged = unmerged; unmerge exact" (fun (seed: int) (a: byte) (b: byte) (shape: byte) (tk: bool) (f64: bool) ->
            let dt = if f64 then torch.float64 else torch.float32
            let d = int64 (int a % 5 + 2)
            let r = int b % 4 + 1
            let mo, mi = match int shape % 4 with 0 -> 1L, 1L | 1 -> 3L, 1L | 2 -> 4L, 1L | _ -> 1L, 4L
            let lin = torch.nn.Linear(mi * d, mo * d, dtype = dt)
            randomise (lin.parameters ()) (seed + 1)
            use g = new torch.Generator(uint64 (abs seed))
            let x = torch.randn([| 3L; 2L; mi * d |], dtype = dt, generator = g)
            use yBase = lin.forward x
            let cfg = FactConfig(Rank = r, Variant = (if tk then FactVariant.Tk else FactVariant.Tt), Scale = 0.7)
            let offset = if tk then 2 else 0
            let f = new FactFactors(d, r, cfg.Variant, int64 (offset + int (mo * mi) + 1), dt, torch.CPU)
            let l = new FactLayer(lin)
            l.AddAdapter("default", f, cfg, offset)
            contract l x yBase true dt (fun () -> yBase + x.matmul((factDelta l f cfg offset).t())) seed
            use dw = l.DeltaWeight "default"
            use dr = factDelta l f cfg offset
            close "DeltaWeight is the slice-by-slice ΔW" dt dw dr)
        for tk in [ false; true ] do
            test $"""FacT-{(if tk then "TK" else "TT")} on the zoo's ViT: counts are the paper's formula; save → load; merged = unmerged; unload restores""" {
                let a, b = twinOf vit
                use x = torch.randn(2L, 3L, 8L, 8L)
                use y0 = fwd a x
                let cfg = FactConfig(Rank = 3, Variant = (if tk then FactVariant.Tk else FactVariant.Tt))
                let ta = Tuner.Apply(a, cfg)
                a.eval ()
                use yFresh = fwd a x
                Expect.isTrue (same yFresh y0) "V zero: a fresh FacT changes nothing"
                // C 16, r 3, L 2 blocks, 12 slices per block (q, k, v, proj, fc1 ×4, fc2 ×4)
                let c, r, blocks = 16L, 3L, 2L
                let expected = if tk then 2L * c * r + r * r * r + r * 12L * blocks else 2L * c * r + 12L * r * r * blocks
                Expect.equal (ta.Summary().Trainable) expected (if tk then "2Cr + r³ + 12L·r" else "2Cr + 12L·r²")
                randomise (ta.Attached("default").Parameters()) 9
                if not tk then for struct (_, l) in ta.Layers do randomise [ (l :?> FactLayer).fact_s.Parameter "default" ] 4
                use ya = fwd a x
                Expect.isGreaterThan (relErr ya y0) 1e-6 "trained factors change the output"
                use dir = new TempDir()
                AdapterCheckpoint.Save(ta, dir.Path)
                let keys = AdapterCheckpoint.StateDict(ta).Keys |> Set.ofSeq
                Expect.contains keys "base_model.model.fact.FacTu" "the shared U, once"
                if tk then Expect.contains keys "base_model.model.fact.FacTc" "the Tucker core"
                else Expect.contains keys "base_model.model.blocks.1.mlp.fc2.fact_s" "TT's per-layer Σ"
                let json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))).AsObject()
                Expect.equal (PeftConfigTests.violations json) [] "its adapter_config.json passes its rules"
                let tb = AdapterCheckpoint.Load(b, dir.Path)
                b.eval ()
                use yb = fwd b x
                close "loaded" torch.float32 yb ya
                Expect.equal (tb.Summary().Trainable) expected "the loaded adapter counts the same"
                ta.Merge()
                use ym = fwd a x
                close "merged model" torch.float32 ym ya
                ta.Unmerge()
                let plain = ta.Unload()
                use yu = fwd plain x
                Expect.isTrue (same yu y0) "unloading restores the base model exactly"
                Expect.isFalse (plain.named_children() |> Seq.exists (fun struct (n, _) -> n = "fact")) "the shared factors are gone"
            }
        test "FacT on SAM's ViT encoder with its MLP's names; on TinyViT it says what fits" {
            let s = sam ()
            let t = Tuner.Apply(s, FactConfig(Rank = 2, Targets = [| "qkv"; "attn.proj"; @"re:image_encoder\.blocks\.\d+\.mlp\.lin[12]" |]))
            // the encoder's blocks only (the mask decoder has lin1/lin2 too): 2 blocks × 12 slices
            Expect.equal (t.Summary().Trainable) (2L * 16L * 2L + 12L * 2L * 2L * 2L) "2Cr + 12L·r²"
            let tv = Zoo.Create("tiny_vit", ModelArgs.FromJson """{"num_classes": 3, "embed_dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 2], "window_sizes": [4, 4, 4, 2]}""", torch.CPU)
            let e = Tuner.Match(tv, FactConfig()).Errors |> String.concat "; "
            Expect.stringContains e "one width" "FacT's sharing needs one width"
            Expect.stringContains e "use lora there" "says what would fit"
        }
    ]

let private specTests =
    testList "specs" [
        test "convpass and fact parse with their options and convert to their Core configs" {
            let conv text rank =
                match Lora.Conversion.ToCore.parseMethod text rank with
                | Ok m -> m, (match Lora.Conversion.ToCore.methodOf (lazy "head") rank m with Lora.Conversion.CoreMethod.Tune c -> c | _ -> failtest "a tuning config")
                | Error e -> failtestf "%s: %A" text e
            let m, c = conv "convpass: { scale: 0.1 }" (Some 8)
            Expect.equal m.Name "convpass" "name"
            let c = c :?> ConvpassConfig
            Expect.equal (c.Width, c.Scale) (8, 0.1) "width from the grid's rank, scale"
            let m, f = conv "fact: { variant: tk, scale: 10 }" (Some 4)
            Expect.equal m.Name "fact_tk" "TK runs are named apart from TT's"
            let f = f :?> FactConfig
            Expect.equal (f.Variant, f.Rank, f.Scale) (FactVariant.Tk, 4, 10.0) "variant, rank, scale"
            Expect.sequenceEqual f.Targets [ "qkv"; "attn.proj"; "fc1"; "fc2" ] "the paper's layers"
            Expect.equal (fst (conv "fact" (Some 2))).Name "fact" "TT by default"
            match Lora.Dsl.YamlSpec.method "fact: { variant: cp }" with
            | Error e -> Expect.stringContains (String.concat "; " e) "tt" "names the variants"
            | Ok _ -> failtest "an unknown variant must fail"
        }
        test "validate: convpass and fact on a zoo model they do not fit say what would fit" {
            let run m zoo = MethodZooTests.checkOn m zoo 2
            Expect.stringContains (run Lora.Dsl.Builders.convpass "resnet18") "IBypassHost" "Convpass on a ResNet"
            Expect.equal (run Lora.Dsl.Builders.convpass "vit_tiny_patch16_224") "" "Convpass fits a ViT"
            Expect.equal (run Lora.Dsl.Builders.factTK "vit_tiny_patch16_224") "" "FacT fits a ViT"
            Expect.stringContains (run Lora.Dsl.Builders.factTT "convnext_tiny") "matches no module" "FacT's ViT targets on a ConvNeXt"
        }
        test "a LoRA run's canonical form has none of the new fields; convpass and fact runs hash apart" {
            let ms = [ Lora.Dsl.Builders.convpass; Lora.Dsl.Builders.factTT; Lora.Dsl.Builders.factTK; Lora.Dsl.Builders.adaptformer ]
            Expect.equal (ms |> List.map (MethodZooTests.tuningRun >> Lora.Dsl.Canonical.hash) |> List.distinct).Length ms.Length "distinct hashes"
            Expect.isFalse ((Lora.Dsl.Canonical.json (MethodZooTests.tuningRun Lora.Dsl.Builders.lora)).Contains "variant") "no variant in LoRA's form"
        }
    ]


let private vptTests =
    testList "VPT on SAM" [
        test "SAM's ViT encoder takes shallow and deep prompts: they change the masks, count tokens·dim (× depth), round-trip, refuse to merge" {
            for deep in [ false; true ] do
                let a, b = twinOf sam
                use x = torch.randn(1L, 3L, 32L, 32L)
                use y0 = (use _ = torch.no_grad () in fwd a x)
                let ta = Tuner.Apply(a, VptConfig(Tokens = 3, Deep = deep))
                use ya = fwd a x
                Expect.sequenceEqual ya.shape y0.shape "same mask shape (the prompts are dropped before the neck)"
                Expect.isGreaterThan (relErr ya y0) 1e-7 "prompts take part in the windowed and the global attention"
                Expect.equal (ta.Summary().Trainable) ((if deep then 2L else 1L) * 3L * 16L) "layers × tokens × dim"
                use dir = new TempDir()
                AdapterCheckpoint.Save(ta, dir.Path)
                Expect.contains (AdapterCheckpoint.StateDict(ta).Keys |> Set.ofSeq) "base_model.model.image_encoder.prompt.prompt_embeddings" "key"
                AdapterCheckpoint.Load(b, dir.Path) |> ignore
                use yb = fwd b x
                close "loaded" torch.float32 yb ya
                Expect.throwsT<System.InvalidOperationException> (fun () -> ta.Merge()) "VPT cannot merge"
                ta.DisableAdapters()
                use yOff = (use _ = torch.no_grad () in fwd a x)
                Expect.isTrue (same yOff y0) "disabled: the base model exactly"
        }
        test "a windowed block whose one window is the grid is the global block, prompts included; with several windows each window's grid output is its own global attention" {
            let block ws grid = new SamEncoderBlock(8L, 2L, 2.0, true, true, ws, grid)
            let copy (src: torch.nn.Module) (dst: torch.nn.Module) =
                let sd = src.state_dict ()
                use _ = torch.no_grad ()
                for KeyValue(k, v) in dst.state_dict () do v.copy_(sd.[k]) |> ignore
            let one = block 4L 4L
            randomise (one.parameters ()) 2
            let glob = block 0L 4L
            copy one glob
            one.eval (); glob.eval ()
            use x = torch.randn(2L, 4L, 4L, 8L)
            use p = torch.randn(2L, 3L, 8L)
            let struct (y1, p1) = one.ForwardPrompted(x, p)
            let struct (y2, p2) = glob.ForwardPrompted(x, p)
            close "grid" torch.float32 y1 y2
            close "prompts (the mean over one window)" torch.float32 p1 p2
            // 2×2 windows of side 2: each window's grid output = a global block on that window alone
            let win = block 2L 4L
            randomise (win.parameters ()) 3
            let crop = block 0L 2L
            copy win crop
            win.eval (); crop.eval ()
            let struct (yw, _) = win.ForwardPrompted(x, p)
            for i in [ 0L; 2L ] do
                for j in [ 0L; 2L ] do
                    use xs = x.narrow(1L, i, 2L).narrow(2L, j, 2L).contiguous()
                    let struct (yc, _) = crop.ForwardPrompted(xs, p)
                    close $"window ({i}, {j})" torch.float32 (yw.narrow(1L, i, 2L).narrow(2L, j, 2L)) yc
        }
        test "VPT on TinyViT is refused, naming what fits" {
            let tv = Zoo.Create("tiny_vit", ModelArgs.FromJson """{"num_classes": 3, "embed_dims": [8, 16, 16, 16], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 2], "window_sizes": [4, 4, 4, 2]}""", torch.CPU)
            let e = Tuner.Match(tv, VptConfig()).Errors |> String.concat "; "
            Expect.stringContains e "sam_vit" "names the encoders it fits"
            Expect.stringContains e "patch-merging" "says why TinyViT does not"
        }
    ]

let tests = testList "VisionMethods" [ convpassTests; factTests; vptTests; specTests ]
