module Lora.Tests.TuningTests

open System
open Expecto
open TorchSharp
open TorchSharp.Modules
open Lora.Core.Tuning
open Lora.Tests.Generators
open Lora.Tests.TuningModels

let private dtypeOf (b: bool) = if b then torch.float64 else torch.float32
let private tol (dt: torch.ScalarType) = if dt = torch.float64 then 1e-9 else 2e-4

/// max |a − b| / (1 + max |b|): a tolerance that scales with the magnitude of the output.
let private relErr (a: torch.Tensor) (b: torch.Tensor) =
    use d = (a - b).abs().max()
    use m = b.abs().max()
    d.ToDouble() / (1.0 + m.ToDouble())

let private randomise (ps: Parameter seq) (seed: int) =
    // a local generator: Expecto runs tests in parallel, so the global seed is shared
    use g = new torch.Generator(uint64 (abs seed))
    use _ = torch.no_grad ()
    for p in ps do
        use r = torch.randn(p.shape, dtype = p.dtype, generator = g)
        p.copy_(r * 0.3) |> ignore

/// Identical tensors (same shape, every element equal).
let private same (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && (use d = (a - b).abs().max() in d.ToDouble() = 0.0)

let private throwsMsg<'e when 'e :> exn> (f: unit -> unit) =
    try
        f ()
        failtestf "expected %s" typeof<'e>.Name
    with :? 'e as e -> e.Message

let private close name dt (a: torch.Tensor) (b: torch.Tensor) =
    Expect.sequenceEqual a.shape b.shape (name + ": shape")
    let e = if b.numel () = 0L then 0.0 else relErr a b
    Expect.isLessThan e (tol dt) (sprintf "%s: relative error %g" name e)

/// Merged forward equals unmerged forward; unmerging restores W bit for bit; merging twice is a no-op.
let private mergeContract (layer: TunerLayer) (x: torch.Tensor) dt =
    layer.eval ()
    use w0 = layer.BaseWeight.detach().clone()
    use y = layer.forward x
    layer.Merge()
    layer.Merge()
    use ym = layer.forward x
    close "merged vs unmerged" dt ym y
    layer.Unmerge()
    layer.Unmerge()
    Expect.isTrue (same layer.BaseWeight w0) "unmerge restores W exactly"
    use y2 = layer.forward x
    Expect.isTrue (same y2 y) "forward after unmerge is the unmerged forward"

let private linearCase (seed: int) (a: int) (b: int) (c: int) (f64: bool) =
    let dt = dtypeOf f64
    let inF, outF = int64 (abs a % 9 + 2), int64 (abs b % 9 + 2)
    let r = abs c % int (min inF outF) + 1
    let lin = torch.nn.Linear(inF, outF, dtype = dt)
    randomise (lin.parameters()) (seed + 1)   // local generator: replayable under parallel tests
    use g = new torch.Generator(uint64 (abs seed))
    let x = torch.randn([| 3L; 2L; inF |], dtype = dt, generator = g)
    lin, x, r, dt

let private layerTests =
    testList "layers" [
        testProp "LoRA Linear: merged = unmerged, unmerge restores W, fresh LoRA is the base" (fun (seed: int) a b c (f64: bool) (rs: bool) ->
            let lin, x, r, dt = linearCase seed a b c f64
            use yBase = lin.forward x
            let l = new LoraLinear(lin)
            l.AddAdapter("default", LoraOptions(r, float (abs seed % 16 + 1), 0.3, rs))
            l.SetActiveAdapters [ "default" ]
            l.eval ()
            use y0 = l.forward x
            Expect.isTrue (same y0 yBase) "B = 0: a fresh adapter leaves the output unchanged (dropout off in eval)"
            randomise (l.AdapterParameters "default") seed
            mergeContract l x dt)

        testProp "DoRA Linear: merged = unmerged, unmerge restores W, fresh DoRA is the base" (fun (seed: int) a b c (f64: bool) ->
            let lin, x, r, dt = linearCase seed a b c f64
            use yBase = lin.forward x
            let l = new LoraLinear(lin)
            l.AddAdapter("default", LoraOptions(r, 8.0, 0.0, UseDora = true))
            l.SetActiveAdapters [ "default" ]
            l.eval ()
            use y0 = l.forward x
            close "fresh DoRA" dt y0 yBase
            randomise (l.AdapterParameters "default") seed
            mergeContract l x dt)

        testProp "AdaLoRA Linear: merged = unmerged; masked triplets contribute nothing" (fun (seed: int) a b c (f64: bool) ->
            let lin, x, r, dt = linearCase seed a b c f64
            use yBase = lin.forward x
            let l = new AdaLoraLinear(lin)
            l.AddAdapter("default", r, 8.0, 0.0)
            l.SetActiveAdapters [ "default" ]
            l.eval ()
            use y0 = l.forward x
            Expect.isTrue (same y0 yBase) "E = 0 at init"
            randomise (l.AdapterParameters "default") seed
            mergeContract l x dt
            // zero E entries; the output must equal that of a rank-reduced triplet
            let keep = [| for i in 0 .. r - 1 -> i % 2 = 0 |]
            use _ = torch.no_grad ()
            use mask = torch.tensor(keep |> Array.map not)
            l.E("default").masked_fill_(mask.view(-1L, 1L), 0.0) |> ignore
            use idx = torch.tensor([| for i in 0 .. r - 1 do if keep.[i] then int64 i |])
            use aK = l.A("default").index_select(0L, idx)
            use eK = l.E("default").index_select(0L, idx)
            use bK = l.B("default").index_select(1L, idx)
            use xr = x.matmul((aK * eK).t()).matmul(bK.t()) * (8.0 / (float r + 1e-5))
            use ref = yBase + xr
            use y = l.forward x
            close "masked" dt y ref)

        testProp "AdaLoRA Conv2d: fresh is the base, forward = float64 conv2d with W + B(A∘E)·α/(r+1e-5), merged = unmerged, masked triplets drop out" (fun (seed: int) (a: byte) (b: byte) (c: byte) (f64: bool) ->
            let dt = dtypeOf f64
            let inC, outC = int64 (a % 4uy + 1uy), int64 (b % 4uy + 1uy)
            let k = int64 (c % 3uy + 1uy)
            let stride, pad, dil = int64 (a / 4uy % 2uy + 1uy), int64 (b / 4uy % 3uy), int64 (c / 3uy % 2uy + 1uy)
            let r = int (a / 8uy) % int (min (inC * k * k) outC) + 1
            let alpha = float (c / 6uy % 16uy + 1uy)
            let conv = torch.nn.Conv2d(inC, outC, k, stride, pad, dil, PaddingModes.Zeros, 1L, true, torch.CPU, dt)
            randomise (conv.parameters()) (seed + 1)
            use gen = new torch.Generator(uint64 (abs seed))
            let x = torch.randn([| 2L; inC; 7L; 6L |], dtype = dt, generator = gen)
            use yBase = conv.forward x
            let l = new AdaLoraConv2d(conv)
            l.AddAdapter("default", r, alpha, 0.0)
            l.SetActiveAdapters [ "default" ]
            l.eval ()
            use y0 = l.forward x
            Expect.isTrue (same y0 yBase) "E = 0 at init: the base output exactly"
            randomise (l.AdapterParameters "default") seed
            Expect.sequenceEqual (l.A "default").shape [| int64 r; inC * k * k |] "A: r × in·k² (PEFT's SVDConv2d)"
            Expect.sequenceEqual (l.B "default").shape [| outC; int64 r |] "B: out × r"
            // the float64 reference, from the formula
            let d (t: torch.Tensor) = t.detach().to_type(torch.float64)
            let reference () =
                use delta = (d (l.B "default")).matmul(d (l.A "default") * d (l.E "default")) * (alpha / (float r + 1e-5))
                use w = d conv.weight + delta.reshape(conv.weight.shape)
                torch.nn.functional.conv2d(d x, w, d conv.bias, [| stride; stride |], [| pad; pad |], [| dil; dil |])
            use want = reference ()
            use y = l.forward x
            close "forward vs float64 reference" dt (d y) want
            use dw = l.DeltaWeight "default"
            Expect.sequenceEqual dw.shape conv.weight.shape "ΔW has W's shape"
            mergeContract l x dt
            // zero every other E entry: the output is the reference with those triplets gone
            use _ = torch.no_grad ()
            use mask = torch.tensor([| for i in 0 .. r - 1 -> i % 2 = 1 |])
            l.E("default").masked_fill_(mask.view(-1L, 1L), 0.0) |> ignore
            use want2 = reference ()
            use y2 = l.forward x
            close "masked vs float64 reference" dt (d y2) want2)

        testProp "LoRA/DoRA Conv2d: merged = unmerged over stride, padding, dilation, groups, padding mode" (fun (seed: int) (a: byte) (b: byte) (c: byte) (f64: bool) (dora: bool) ->
            let dt = dtypeOf f64
            let g = int64 (a % 3uy + 1uy)
            let inC, outC = g * int64 (b % 3uy + 1uy), g * int64 (c % 3uy + 1uy)
            let k = int64 (a / 3uy % 3uy + 1uy)
            let stride, pad, dil = int64 (b / 3uy % 2uy + 1uy), int64 (c / 3uy % 3uy), int64 (a / 9uy % 2uy + 1uy)
            let mode = match (b / 9uy) % 3uy with 0uy -> PaddingModes.Zeros | 1uy -> PaddingModes.Reflect | _ -> PaddingModes.Circular
            let mode = if pad = 0L then PaddingModes.Zeros else mode
            let r = g * int64 (c / 9uy % 2uy + 1uy)
            let conv = torch.nn.Conv2d(inC, outC, k, stride, pad, dil, mode, g, true, torch.CPU, dt)
            randomise (conv.parameters()) (seed + 1)
            use gen = new torch.Generator(uint64 (abs seed))
            let x = torch.randn([| 2L; inC; 7L; 6L |], dtype = dt, generator = gen)
            use yBase = conv.forward x
            let l = new LoraConv2d(conv)
            l.AddAdapter("default", LoraOptions(int r, 4.0, UseDora = dora))
            l.SetActiveAdapters [ "default" ]
            l.eval ()
            use y0 = l.forward x
            close "fresh LoRA/DoRA is the base" dt y0 yBase
            randomise (l.AdapterParameters "default") seed
            use d = l.DeltaWeight "default"
            Expect.sequenceEqual d.shape conv.weight.shape "ΔW has W's shape"
            mergeContract l x dt)

        // The LoRA and AdaLoRA forwards fold the scale and the sum into one addmm; their gradients come
        // from autograd through it. Checked against the closed forms, computed in float64, for
        // L = Σ y∘G: dB = k·Gᵀ(xMᵀ), dM = k·(GB)ᵀx, dx = GW + k·(GB)M, with M = A (LoRA) or A∘E (AdaLoRA).
        testProp "LoRA and AdaLoRA Linear: output and gradients of A, B, E and x equal float64 closed forms" (fun (seed: int) a b c (f64: bool) (ada: bool) (rs: bool) ->
            let lin, x, r, dt = linearCase seed a b c f64
            let r = if ada && seed % 4 = 0 then 0 else r   // AdaLoRA sliced to no ranks at all
            lin.weight.requires_grad <- false
            lin.bias.requires_grad <- false
            let alpha = float (abs seed % 16 + 1)
            let layer, k, parts =
                if ada then
                    let l = new AdaLoraLinear(lin)
                    l.AddAdapter("default", r, alpha, 0.0)
                    l :> TunerLayer, alpha / (float r + 1e-5), (fun () -> l.A "default", Some(l.E "default"), l.B "default")
                else
                    let l = new LoraLinear(lin)
                    let o = LoraOptions(r, alpha, 0.0, rs)
                    l.AddAdapter("default", o)
                    l :> TunerLayer, alpha / (if rs then sqrt (float r) else float r), (fun () -> l.A("default").weight, None, l.B("default").weight)
            layer.SetActiveAdapters [ "default" ]
            randomise (layer.AdapterParameters "default") seed
            let x = x.detach().requires_grad_(true)
            use g = new torch.Generator(uint64 (abs seed) + 11UL)
            use G = torch.randn([| 3L; 2L; lin.weight.shape.[0] |], dtype = dt, generator = g)
            use y = layer.forward x
            use loss = (y * G).sum()
            loss.backward ()
            let A, E, B = parts ()
            let d (t: torch.Tensor) = t.detach().to_type(torch.float64)
            let x2, G2 = (d x).reshape(-1L, x.shape.[2]), (d G).reshape(-1L, G.shape.[2])
            use ks = k.ToScalar()   // held: a temporary Scalar may be finalized while native code reads it
            let M = match E with Some e -> d A * d e | None -> d A
            let GB = G2.matmul(d B)
            let yRef = x2.matmul((d lin.weight).t()) + d lin.bias + x2.matmul(M.t()).matmul((d B).t()) * ks
            close "y" dt (y.reshape(-1L, y.shape.[2])) yRef
            close "dB" dt B.grad (G2.t().matmul(x2.matmul(M.t())) * ks)
            let dM = GB.t().matmul(x2) * ks
            match E with
            | Some e ->
                close "dA" dt A.grad (dM * d e)
                close "dE" dt e.grad ((dM * d A).sum(1L, keepdim = true))
            | None -> close "dA" dt A.grad dM
            close "dx" dt (x.grad.reshape(-1L, x.shape.[2])) (G2.matmul(d lin.weight) + GB.matmul(M) * ks))

        test "Conv2d with groups rejects a rank that is not a multiple of groups" {
            let conv = torch.nn.Conv2d(4L, 4L, 3L, groups = 2L)
            let l = new LoraConv2d(conv)
            let e = throwsMsg<ArgumentException> (fun () -> l.AddAdapter("default", LoraOptions(3, 3.0)))
            Expect.stringContains e "multiple of 2" "says what rank works"
        }

        test "LoRA forward equals a float64 reference x·Wᵀ + b + s·x·Aᵀ·Bᵀ" {
            torch.manual_seed 7L |> ignore
            let lin = torch.nn.Linear(5L, 4L, dtype = torch.float64)
            let l = new LoraLinear(lin)
            l.AddAdapter("default", LoraOptions(3, 6.0))
            l.SetActiveAdapters [ "default" ]
            randomise (l.AdapterParameters "default") 3
            l.eval ()
            let x = torch.randn([| 6L; 5L |], dtype = torch.float64)
            use y = l.forward x
            // by hand, element by element
            let W, bias = lin.weight.data<float>().ToArray(), lin.bias.data<float>().ToArray()
            let A, B = l.A("default").weight.data<float>().ToArray(), l.B("default").weight.data<float>().ToArray()
            let xs = x.data<float>().ToArray()
            let s = 6.0 / 3.0
            let ys = y.data<float>().ToArray()
            for n in 0 .. 5 do
                for o in 0 .. 3 do
                    let mutable v = bias.[o]
                    for i in 0 .. 4 do v <- v + xs.[n * 5 + i] * W.[o * 5 + i]
                    for j in 0 .. 2 do
                        let mutable ax = 0.0
                        for i in 0 .. 4 do ax <- ax + xs.[n * 5 + i] * A.[j * 5 + i]
                        v <- v + s * B.[o * 3 + j] * ax
                    Expect.floatClose Accuracy.veryHigh ys.[n * 4 + o] v (sprintf "y[%d,%d]" n o)
        }

        test "rsLoRA scales by alpha/sqrt(r), LoRA by alpha/r" {
            Expect.floatClose Accuracy.veryHigh (LoraOptions(4, 8.0).Scaling) 2.0 "alpha/r"
            Expect.floatClose Accuracy.veryHigh (LoraOptions(4, 8.0, UseRsLora = true).Scaling) 4.0 "alpha/sqrt r"
        }

        test "Adapter starts as identity when asked, and has fc1/fc2 keys" {
            let a = new BottleneckAdapter(8L, 0.25, true)
            let keys = a.state_dict().Keys |> Seq.sort |> List.ofSeq
            Expect.equal keys [ "fc1.bias"; "fc1.weight"; "fc2.bias"; "fc2.weight" ] "keys"
            Expect.equal (a.fc1.out_features) 2L "ratio 0.25"
            use x = torch.randn(3L, 8L)
            use y = a.forward x
            Expect.equal (y.abs().max().ToDouble()) 0.0 "fc2 zero → adapter output 0"
        }
    ]

let private keys (m: torch.nn.Module) = m.state_dict().Keys |> Seq.toList
let private count (m: torch.nn.Module) trainable =
    m.parameters() |> Seq.filter (fun p -> not trainable || p.requires_grad) |> Seq.sumBy (fun p -> p.numel())

let private meta = torch.device "meta"

let private injectionTests =
    testList "injection" [
        test "ViT-B/16 (100 classes) LoRA r=8 on qkv + head: PEFT's counts" {
            let m = vitB meta
            Expect.equal (count m false) 85_875_556L "the mimic has ViT-B's parameter count"
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 8, Alpha = 16.0, ModulesToSave = [| "head" |]))
            let s = t.Summary()
            Expect.equal s.Trainable 371_812L "trainable"
            Expect.equal s.Total 86_247_368L "total (head counted twice)"
            Expect.stringContains (string s) "Trainable params: 371,812" "rendering"
            Expect.stringContains (string s) "LoRA: blocks.*.attn.qkv ×12" "tuned modules grouped"
            Expect.equal (s.ByGroup.["LoRA"].ToTuple()) (294_912L, 294_912L) "LoRA group: 12 × (8·768 + 2304·8)"
            Expect.equal (s.ByGroup.["modules_to_save"].ToTuple()) (76_900L, 76_900L) "head copy"
        }
        test "ViT-B/16 DoRA trainable 399,460; AdaLoRA init 12 trainable 519,412" {
            let m = vitB meta
            let t = Tuner.Apply(m, LoraConfig(UseDora = true, Targets = [| "qkv" |], Rank = 8, ModulesToSave = [| "head" |]))
            Expect.equal (t.Summary().Trainable) 399_460L "DoRA"
            let m2 = vitB meta
            let t2 = Tuner.Apply(m2, AdaLoraConfig(Targets = [| "qkv" |], ModulesToSave = [| "head" |]))
            Expect.equal (t2.Summary().Trainable) 519_412L "AdaLoRA"
            Expect.equal (StepHooks.Of(m2).Count) 1 "the allocator is attached to the model"
        }
        test "ConvNeXt-T rank 2 on fc1, fc2: 132,480 trainable of 28,721,608" {
            let m = new ConvNeXtT(meta)
            Expect.equal (count m false) 28_589_128L "the mimic has ConvNeXt-T's parameter count"
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "fc1"; "fc2" |], Rank = 2))
            let s = string (t.Summary())
            Expect.stringContains s "Total params: 28,721,608" "total"
            Expect.stringContains s "Trainable params: 132,480" "trainable"
            Expect.stringContains s "Non-trainable params: 28,589,128" "non-trainable"
        }
        test "injection changes the keys as PEFT names them and freezes the rest" {
            let m = vitTiny ()
            let before = keys m
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "attn.qkv" |], Rank = 2, ModulesToSave = [| "head" |]))
            let after = keys m
            Expect.contains after "blocks.0.attn.qkv.base_layer.weight" "base layer key"
            Expect.contains after "blocks.1.attn.qkv.lora_A.default.weight" "lora_A key"
            Expect.contains after "blocks.1.attn.qkv.lora_B.default.weight" "lora_B key"
            Expect.contains after "head.original_module.weight" "original head"
            Expect.contains after "head.modules_to_save.default.bias" "trainable head copy"
            Expect.isFalse (List.contains "blocks.0.attn.qkv.weight" after) "old key gone"
            Expect.equal (List.length after) (List.length before + 2 * 2 + 2) "2 layers × (A, B) + head copy"
            let trainable = m.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (n, _) -> n) |> Seq.sort |> List.ofSeq
            Expect.equal trainable [ "blocks.0.attn.qkv.lora_A.default.weight"; "blocks.0.attn.qkv.lora_B.default.weight"
                                     "blocks.1.attn.qkv.lora_A.default.weight"; "blocks.1.attn.qkv.lora_B.default.weight"
                                     "head.modules_to_save.default.bias"; "head.modules_to_save.default.weight" ] "exactly the adapters and the head copy train"
            // the forward uses the new layers: a fresh LoRA leaves the output as it was
            ignore t
        }
        test "a module to save that no wrapper can stand in for (SAM's mask decoder) trains in place and saves under PEFT's keys" {
            let cfg = """{"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "window_size": 0,
                          "out_chans": 32, "decoder_depth": 1, "decoder_num_heads": 2, "decoder_mlp_dim": 32, "iou_head_hidden_dim": 16, "mask_in_chans": 4}"""
            let twin () =
                let a = Lora.Core.Models.Zoo.Create("sam_vit", cfg)
                let b = Lora.Core.Models.Zoo.Create("sam_vit", cfg)
                use _ = torch.no_grad ()
                let sa = a.state_dict()
                for KeyValue(k, v) in b.state_dict() do v.copy_(sa.[k]) |> ignore
                a.eval (); b.eval ()
                a, b
            let a, b = twin ()
            let decoder = [ for struct (n, p) in a.named_parameters() do if n.StartsWith "mask_decoder." then n, p.numel() ]
            let baseTotal = count a false
            let config = LoraConfig(Targets = [| "qkv" |], Rank = 2, ModulesToSave = [| "mask_decoder" |])
            let report = Tuner.Match(a, config)
            Expect.equal [ for m in report.TrainedInPlace -> m.Path, m.ModuleType ] [ "mask_decoder", "MaskDecoder" ] "reported as trained in place"
            Expect.isEmpty report.ModulesToSave "not wrapped"
            let t = Tuner.Apply(a, config)
            Expect.equal (List.ofSeq (t.TrainedInPlace())) [ "mask_decoder" ] "the adapter trains it in place"
            Expect.isEmpty t.SavedModules "no wrapper"
            let trainable = [ for struct (n, p) in a.named_parameters() do if p.requires_grad then n ]
            Expect.equal (trainable |> List.filter (fun n -> not (n.Contains ".lora_"))) (List.map fst decoder) "the decoder's own parameters train, besides LoRA"
            let lora = t.Layers |> Seq.sumBy (fun struct (_, l) -> l.AdapterParameters "default" |> Seq.sumBy (fun p -> p.numel()))
            Expect.equal (count a false) (baseTotal + lora) "no copy: the total grows by LoRA only"
            let d = decoder |> List.sumBy snd
            Expect.equal (t.Summary().ByGroup.["modules_to_save"].ToTuple()) (d, d) "summarised as a module to save"
            Expect.contains (t.Summary().TunedModules) "modules_to_save: mask_decoder" "listed among the tuned modules"
            let saved = AdapterCheckpoint.StateDict t
            Expect.equal (saved.Keys |> Seq.filter (fun k -> k.Contains "mask_decoder") |> Seq.sort |> List.ofSeq)
                (decoder |> List.map (fun (n, _) -> "base_model.model." + n) |> List.sort) "saved as PEFT saves a module to save"
            // train it a little, save, load into the twin: same weights, same masks
            randomise [ for struct (_, l) in t.Layers do yield! l.AdapterParameters "default" ] 41
            randomise [ for struct (n, p) in a.named_parameters() do if n.StartsWith "mask_decoder." then p ] 42
            use dir = new TempDir()
            AdapterCheckpoint.Save(t, dir.Path)
            let json = IO.File.ReadAllText(IO.Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))
            Expect.stringContains json "\"mask_decoder\"" "listed in modules_to_save"
            let tb = AdapterCheckpoint.Load(b, dir.Path)
            Expect.equal (List.ofSeq (tb.TrainedInPlace())) [ "mask_decoder" ] "loaded in place"
            let sb = b.state_dict()
            for KeyValue(k, v) in a.state_dict() do
                if k.StartsWith "mask_decoder." then Expect.isTrue (same v sb.[k]) $"{k} loaded"
            use _ = torch.no_grad ()
            use x = torch.randn(2L, 3L, 32L, 32L)
            use ya = a.call x
            use yb = b.call x
            close "masks after load" torch.float32 ya yb
            // only one adapter may train it in place; a module holding tuned layers cannot be
            let e = throwsMsg<ArgumentException> (fun () -> Tuner.Apply(a, LoraConfig(Targets = [| "qkv" |], Rank = 2, ModulesToSave = [| "mask_decoder" |]), "other") |> ignore)
            Expect.stringContains e "already trained in place by adapter 'default'" "second adapter refused"
            let c = Lora.Core.Models.Zoo.Create("sam_vit", cfg)
            let e2 = Tuner.Match(c, LoraConfig(Targets = [| "qkv" |], Rank = 2, ModulesToSave = [| "image_encoder" |])).Errors
            Expect.exists e2 (fun m -> m.Contains "'image_encoder' is trained in place" && m.Contains "target 'image_encoder.blocks.0.attn.qkv'") "a module holding a target"
        }
        test "bias modes: lora_only trains the tuned layers' biases, all trains every bias" {
            let m = vitTiny ()
            Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 2, Bias = BiasMode.LoraOnly)) |> ignore
            let tb = m.named_parameters() |> Seq.filter (fun struct (n, p) -> p.requires_grad && n.EndsWith "bias") |> Seq.map (fun struct (n, _) -> n) |> Seq.sort |> List.ofSeq
            Expect.equal tb [ "blocks.0.attn.qkv.base_layer.bias"; "blocks.1.attn.qkv.base_layer.bias" ] "lora_only"
            let m2 = vitTiny ()
            Tuner.Apply(m2, LoraConfig(Targets = [| "qkv" |], Rank = 2, Bias = BiasMode.All)) |> ignore
            let all = m2.named_parameters() |> Seq.filter (fun struct (n, _) -> n.EndsWith "bias") |> Seq.length
            let tb2 = m2.named_parameters() |> Seq.filter (fun struct (n, p) -> p.requires_grad && n.EndsWith "bias") |> Seq.length
            Expect.equal tb2 all "all"
        }
        test "Sequential and ModuleList children are replaced (forward, parameters, state_dict)" {
            torch.manual_seed 1L |> ignore
            let seq = torch.nn.Sequential([| torch.nn.Linear(4L, 6L) :> M; torch.nn.ReLU(); torch.nn.Linear(6L, 3L) |])
            let x = torch.randn(5L, 4L)
            use y0 = seq.forward x
            let t = Tuner.Apply(seq, LoraConfig(Targets = [| "0"; "2" |], Rank = 2))
            Expect.equal (keys seq) [ "0.base_layer.weight"; "0.base_layer.bias"; "0.lora_A.default.weight"; "0.lora_B.default.weight"
                                      "2.base_layer.weight"; "2.base_layer.bias"; "2.lora_A.default.weight"; "2.lora_B.default.weight" ] "keys in order"
            for struct (_, l) in t.Layers do randomise (l.AdapterParameters "default") 2
            use y1 = seq.forward x
            Expect.isGreaterThan (relErr y1 y0) 1e-3 "the Sequential's forward uses the LoRA layers"
            let m = vitTiny ()
            Tuner.Apply(m, LoraConfig(Targets = [| "re:blocks\\.1\\.mlp\\.fc[12]" |], Rank = 2)) |> ignore
            let ks = keys m
            Expect.contains ks "blocks.1.mlp.fc2.lora_A.default.weight" "ModuleList child replaced (regex target)"
            Expect.contains ks "blocks.0.mlp.fc2.weight" "block 0 untouched"
            let report = Tuner.Match(m, LoraConfig(Targets = [| "mlp.fc1" |]))
            Expect.equal (report.Targets |> Seq.map (fun x -> x.Path) |> List.ofSeq) [ "blocks.0.mlp.fc1"; "blocks.1.mlp.fc1" ] "Match lists the targets"
            Expect.contains report.Unmatched "blocks.0.attn.qkv" "and the Linear layers it leaves out"
            Expect.isFalse (report.Unmatched |> Seq.contains "blocks.1.mlp.fc2") "a tuned layer is not listed as unmatched"
            Expect.isFalse (keys m |> List.exists (fun k -> k.StartsWith "blocks.0.mlp.fc1.lora")) "Match changes nothing"
        }
        test "ModuleList elements are replaced in place; a list typed too narrowly is a clear error" {
            let holder = new ListHolder()
            let x = torch.randn(2L, 4L)
            use y0 = holder.forward x
            let t = Tuner.Apply(holder, LoraConfig(Targets = [| "layers.1" |], Rank = 2))
            Expect.equal (keys holder) [ "layers.0.weight"; "layers.0.bias"; "layers.1.base_layer.weight"; "layers.1.base_layer.bias"
                                         "layers.1.lora_A.default.weight"; "layers.1.lora_B.default.weight" ] "keys"
            for struct (_, l) in t.Layers do randomise (l.AdapterParameters "default") 4
            use y1 = holder.forward x
            Expect.isGreaterThan (relErr y1 y0) 1e-3 "forward goes through the LoRA layer"
            let narrow = new NarrowListHolder()
            let before = keys narrow
            let e = throwsMsg<ArgumentException> (fun () -> Tuner.Apply(narrow, LoraConfig(Targets = [| "layers.0" |], Rank = 2)) |> ignore)
            Expect.stringContains e "declare it as Module<Tensor, Tensor>" "says what to change"
            Expect.equal (keys narrow) before "checked before anything changed"
        }
        test "bad configurations are rejected with the pattern or module named" {
            let m = vitTiny ()
            let err cfg = throwsMsg<ArgumentException> (fun () -> Tuner.Apply(m, cfg) |> ignore)
            Expect.stringContains (err (LoraConfig(Targets = [| "nope" |]))) "'nope' matches no module" "no match"
            Expect.stringContains (err (LoraConfig(Targets = [| "qkv" |], Rank = 20))) "rank 20 for 'blocks.0.attn.qkv' exceeds" "rank too large"
            Expect.stringContains (err (LoraConfig(Targets = [| "norm1" |]))) "'blocks.0.norm1' is a LayerNorm" "unsupported type"
            // (AdaLoRA tunes Conv2d layers since PEFT 0.20's SVDConv2d; a norm it still cannot)
            Expect.stringContains (err (AdaLoraConfig(Targets = [| "norm1" |]))) "'blocks.0.norm1' is a LayerNorm, which AdaLoRA cannot tune" "AdaLoRA on a norm"
            Expect.stringContains (err (LoraConfig(Targets = [| "qkv" |], RankPattern = readOnlyDict [ "fc9", 2 ]))) "'fc9'" "rank pattern matching nothing"
            Expect.isFalse (keys m |> List.exists (fun k -> k.Contains "lora")) "nothing changed"
        }
        test "configuration errors are reported together, naming the fields" {
            let e = throwsMsg<ArgumentException> (fun () ->
                AdaLoraConfig(Targets = [| "qkv"; "re:(" |], Dropout = 1.0, InitRank = 4, TargetRank = 6).Validate())
            for part in [ "Dropout must be in [0, 1)"; "TargetRank must be in 1..InitRank (4), got 6"; "'re:(' is not a valid regular expression" ] do
                Expect.stringContains e part "each problem listed"
            let e2 = throwsMsg<ArgumentException> (fun () -> BottleneckAdapterConfig(Targets = [| "qkv" |]).Validate())
            Expect.stringContains e2 "Targets does not apply to the Adapter method" "bad combination"
        }
        test "per-module rank and alpha patterns" {
            let m = vitTiny ()
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 2, Alpha = 4.0, RankPattern = readOnlyDict [ "blocks.1.attn.qkv", 4 ], AlphaPattern = readOnlyDict [ "blocks.1.attn.qkv", 2.0 ]))
            let struct (_, l0), struct (_, l1) = t.Layers.[0], t.Layers.[1]
            let l0, l1 = l0 :?> LoraLinear, l1 :?> LoraLinear
            Expect.equal (l0.Options("default").Rank, l1.Options("default").Rank) (2, 4) "ranks"
            Expect.equal (l0.Scaling "default", l1.Scaling "default") (2.0, 0.5) "scalings"
        }
    ]

let private modelTests =
    testList "tuned model" [
        test "merge, merge again, unmerge, merge-and-unload give the same outputs and plain keys" {
            torch.manual_seed 3L |> ignore
            let m = vitTiny ()
            m.eval ()
            let plain = keys m
            let x = torch.randn(2L, 3L, 8L, 8L)
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "qkv"; "fc1"; "patch_embed.proj" |], Rank = 2, ModulesToSave = [| "head" |]))
            for struct (_, l) in t.Layers do randomise (l.AdapterParameters "default") 5
            let struct (_, w) = t.SavedModules.[0]
            randomise (w.Copy("default").parameters()) 6
            use y = m.forward x
            t.Merge(); t.Merge()
            use ym = m.forward x
            close "merged" torch.float32 ym y
            t.Unmerge()
            use yu = m.forward x
            Expect.isTrue (same yu y) "unmerged output identical"
            let plainModel = t.MergeAndUnload() :?> M
            Expect.equal (keys plainModel) plain "plain keys back"
            use yp = plainModel.forward x
            close "merge-and-unload" torch.float32 yp y
        }
        test "several adapters: switch, disable, delete, weighted cat is exact" {
            torch.manual_seed 4L |> ignore
            let m = vitTiny ()
            m.eval ()
            let x = torch.randn(2L, 3L, 8L, 8L)
            use yBase = m.forward x
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 2))
            Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 3, Alpha = 6.0), "other") |> ignore
            Expect.equal t.ActiveAdapter (Some "default" |> Option.toObj) "first adapter stays active"
            for struct (_, l) in t.Layers do
                randomise (l.AdapterParameters "default") 8
                randomise (l.AdapterParameters "other") 9
            use yA = m.forward x
            t.SetActiveAdapter "other"
            use yB = m.forward x
            Expect.isGreaterThan (relErr yA yB) 1e-4 "switching changes the output"
            let trainable = m.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq
            Expect.all trainable (fun n -> n.Contains ".other.") "only the active adapter trains"
            t.DisableAdapters()
            use yD = m.forward x
            Expect.isTrue (same yD yBase) "disabled = base output"
            t.EnableAdapters()
            // cat: ΔW_new = 0.7 ΔW_default + 0.3 ΔW_other exactly
            t.AddWeightedAdapter([| "default"; "other" |], [| 0.7; 0.3 |], "mix")
            for struct (_, l) in t.Layers do
                use d = l.DeltaWeight "mix"
                use e = l.DeltaWeight("default") * 0.7 + l.DeltaWeight("other") * 0.3
                close "cat" torch.float32 d e
            t.DeleteAdapter "other"
            Expect.isFalse (keys m |> List.exists (fun k -> k.Contains ".other.")) "deleted adapter's keys are gone"
            t.SetActiveAdapter "default"
            use yA2 = m.forward x
            Expect.isTrue (same yA2 yA) "default adapter unchanged by the others"
        }
        test "linear combination is PEFT's: A = Σ √(w·s)·Aᵢ and B = Σ √(w·s)·Bᵢ" {
            let m = vitTiny ()
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 2, Alpha = 2.0))
            Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 2, Alpha = 8.0), "other") |> ignore
            for struct (_, l) in t.Layers do
                randomise (l.AdapterParameters "default") 21
                randomise (l.AdapterParameters "other") 22
            t.AddWeightedAdapter([| "default"; "other" |], [| 0.7; 0.3 |], "mix", Combination.Linear)
            for struct (_, l) in t.Layers do
                let x = l :?> LoraLinear
                let part (a: string) (w: float) (f: string -> torch.Tensor) = f a * sqrt (w * x.Scaling a)
                use a = part "default" 0.7 (fun n -> x.A(n).weight) + part "other" 0.3 (fun n -> x.A(n).weight)
                use b = part "default" 0.7 (fun n -> x.B(n).weight) + part "other" 0.3 (fun n -> x.B(n).weight)
                use d = l.DeltaWeight "mix"
                close "linear" torch.float32 d (b.matmul a)
        }
        test "gradients reach only the adapter; Unload restores the original layers and outputs" {
            let m = vitTiny ()
            m.eval ()
            let x = torch.randn(2L, 3L, 8L, 8L)
            use y0 = m.forward x
            let plain = keys m
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 2, Dropout = 0.1))
            m.train ()
            for struct (_, l) in t.Layers do randomise (l.AdapterParameters "default") 12
            use y = m.forward x
            use loss = y.square().mean()
            loss.backward ()
            for struct (n, p) in m.named_parameters() do
                if n.Contains "lora_" then Expect.isNotNull p.grad (n + " has a gradient")
                else Expect.isNull p.grad (n + " is frozen")
            m.eval ()
            let back = t.Unload() :?> M
            Expect.equal (keys back) plain "original keys"
            use y1 = back.forward x
            Expect.isTrue (same y1 y0) "original outputs"
            Expect.isTrue (back.parameters() |> Seq.forall (fun p -> p.requires_grad)) "unfrozen again"
        }
        test "deleting the last adapter of a layer puts the base layer back" {
            let m = vitTiny ()
            let t = Tuner.Apply(m, LoraConfig(Targets = [| "qkv" |], Rank = 2, ModulesToSave = [| "head" |]))
            Tuner.Apply(m, LoraConfig(Targets = [| "fc1" |], Rank = 2), "b") |> ignore
            t.DeleteAdapter "default"
            let ks = keys m
            Expect.contains ks "blocks.0.attn.qkv.weight" "qkv back to a Linear"
            Expect.contains ks "head.weight" "head unwrapped"
            Expect.contains ks "blocks.0.mlp.fc1.lora_A.b.weight" "the other adapter stays"
            Expect.equal t.ActiveAdapter "b" "active moves to the remaining adapter"
        }
        test "Adapter method: hosts get adapters, identity init keeps the output, merge is a clear error" {
            torch.manual_seed 5L |> ignore
            let m = vitTiny ()
            m.eval ()
            let x = torch.randn(2L, 3L, 8L, 8L)
            use y0 = m.forward x
            let t = Tuner.Apply(m, BottleneckAdapterConfig(InitIdentity = true, ModulesToSave = [| "head" |]))
            let ks = keys m
            Expect.contains ks "blocks.0.adapter_attn.fc1.weight" "attention adapter registered"
            Expect.contains ks "blocks.1.adapter_mlp.fc2.bias" "MLP adapter registered"
            use y1 = m.forward x
            Expect.isTrue (same y1 y0) "identity init"
            // per block: 2 adapters × (16·4+4 + 4·16+16) = 296; ×2 blocks + head copy 16·5+5
            Expect.equal (t.Summary().Trainable) (2L * 296L + 85L) "trainable count"
            let e = throwsMsg<InvalidOperationException> (fun () -> t.Merge())
            Expect.stringContains e "not mergeable" "clear error"
            Expect.throwsT<InvalidOperationException> (fun () -> t.MergeAndUnload() |> ignore) |> ignore
        }
    ]

let private adaloraTests =
    testList "AdaLoRA" [
        test "budget schedule is monotone, starts at init_r·n and ends at target_r·n" {
            let m = vitTiny ()
            let t = Tuner.Apply(m, AdaLoraConfig(Targets = [| "qkv"; "fc1" |], InitRank = 6, TargetRank = 2, TInit = 3, TFinal = 4))
            let a = t.Allocator()
            a.Begin 40L
            let budgets = [ for s in 0L .. 40L -> (let struct (b, _) = a.BudgetSchedule s in b) ]
            Expect.equal budgets.Head 24 "init 6·4"
            Expect.equal (List.last budgets) 8 "target 2·4"
            Expect.isTrue (budgets |> List.pairwise |> List.forall (fun (p, q) -> q <= p)) "non-increasing"
        }
        test "orthogonal regularisation: zero for orthonormal A rows / B columns, hand value otherwise" {
            let lin = torch.nn.Linear(4L, 5L)
            let l = new AdaLoraLinear(lin)
            l.AddAdapter("default", 2, 8.0, 0.0)
            let cfg = AdaLoraConfig(OrthRegWeight = 0.5)
            let alloc = RankAllocator([| struct ("x", l) |], "default", cfg)
            use _ = torch.no_grad ()
            l.A("default").copy_(torch.tensor([| 1.0f; 0.0f; 0.0f; 0.0f; 0.0f; 1.0f; 0.0f; 0.0f |]).view(2L, 4L)) |> ignore
            l.B("default").copy_(torch.eye(5L, 2L)) |> ignore
            use r0 = alloc.ExtraLoss()
            Expect.floatClose Accuracy.high (r0.ToDouble()) 0.0 "orthonormal"
            l.A("default").mul_(torch.tensor 2.0f) |> ignore   // AAᵀ = 4I → ‖3I‖_F = 3·√2
            use r1 = alloc.ExtraLoss()
            Expect.floatClose Accuracy.high (r1.ToDouble()) (0.5 * (3.0 * sqrt 2.0 + 0.0) / 2.0) "0.5 · mean(3√2, 0)"
        }
        test "triplet scores are PEFT's (E + mean A-row + mean B-column of EMA importance × uncertainty), lowest masked" {
            let mk seed =
                let l = new AdaLoraLinear(torch.nn.Linear(4L, 5L, dtype = torch.float64))
                l.AddAdapter("default", 3, 8.0, 0.0)
                randomise (l.AdapterParameters "default") seed
                for p in l.AdapterParameters "default" do
                    use g = new torch.Generator(uint64 (seed + 100))
                    p.grad <- torch.randn(p.shape, dtype = p.dtype, generator = g)
                l
            let l1, l2 = mk 1, mk 2
            let cfg = AdaLoraConfig(InitRank = 3, TargetRank = 2, TotalStep = 4L)
            let alloc = RankAllocator([| struct ("a", l1); struct ("b", l2) |], "default", cfg)
            // one update from zero: avg = 0.15·ipt, unc = 0.15·|ipt − 0.15·ipt| → score = 0.15·0.15·0.85·ipt²
            let score (p: torch.Tensor) = use ipt = (p * p.grad).abs() in (ipt * ipt * (0.15 * 0.15 * 0.85)).detach().clone()
            let expected (l: AdaLoraLinear) =
                use e = score (l.E "default")
                use a = score (l.A "default")
                use b = score (l.B "default")
                (e.view(-1L) + a.mean([| 1L |]) + b.mean([| 0L |])).data<float>().ToArray()
            let want = [ "a", expected l1; "b", expected l2 ]   // before the step masks E
            alloc.AfterOptimizerStep 1L
            for (l, (_, w)) in List.zip [ l1; l2 ] want do
                use got = alloc.TripletScores l
                let g = got.data<float>().ToArray()
                for i in 0 .. 2 do Expect.floatClose Accuracy.veryHigh g.[i] w.[i] "triplet score"
            // step 1 of 4: budget int((6 − 4)·(1 − 1/4)³ + 4) = 4 → the 2 lowest of 6 scores are masked
            let threshold = (want |> List.collect (fun (_, w) -> List.ofArray w) |> List.sort).[1]
            for ((name, w), l) in List.zip want [ l1; l2 ] do
                let keep = alloc.RankPattern.[name]
                for i in 0 .. 2 do
                    Expect.equal keep.[i] (w.[i] > threshold) (sprintf "%s[%d] kept iff above the 2nd lowest score" name i)
                    if not keep.[i] then Expect.equal ((l.E "default").[int64 i, 0L].ToDouble()) 0.0 "masked E is zero"
        }
        test "the allocator's state survives the caller's dispose scopes: same scores and masks as without scopes" {
            let mk seed =
                let l = new AdaLoraLinear(torch.nn.Linear(4L, 5L, dtype = torch.float64))
                l.AddAdapter("default", 3, 8.0, 0.0)
                randomise (l.AdapterParameters "default") seed
                l
            let run scoped =
                let l1, l2 = mk 1, mk 2
                let cfg = AdaLoraConfig(InitRank = 3, TargetRank = 1, TotalStep = 8L, TFinal = 2, DeltaT = 1)
                let alloc = RankAllocator([| struct ("a", l1); struct ("b", l2) |], "default", cfg)
                for step in 1L .. 8L do
                    use scope = if scoped then torch.NewDisposeScope() else null
                    for l in [ l1; l2 ] do
                        for p in l.AdapterParameters "default" do
                            use g = new torch.Generator(uint64 (step * 10L + int64 p.shape[0]))
                            p.grad <- torch.randn(p.shape, dtype = p.dtype, generator = g)
                    if step = 5L then
                        // mid-schedule scores, taken in the step's scope
                        use s = alloc.TripletScores l1
                        Expect.isTrue (s.abs().sum().ToDouble() > 0.0) "scores are non-zero"
                    alloc.AfterOptimizerStep step
                let scores = [ for l in [ l1; l2 ] -> (l.E "default").detach().clone() ]
                alloc.RankPattern, scores
            let p0, e0 = run false
            let p1, e1 = run true
            for k in [ "a"; "b" ] do Expect.sequenceEqual p1.[k] p0.[k] $"{k}: same rank pattern"
            for a, b in List.zip e0 e1 do Expect.isTrue (a.eq(b).all().item<bool>()) "same masked E"
            Expect.equal (p1.Values |> Seq.sumBy (Array.filter id >> Array.length)) 2 "budget target_r · layers"
        }
        test "one budget over Linear and Conv2d layers: the allocator masks both kinds, the regulariser covers both" {
            let mk (l: AdaLoraLayer) seed =
                l.AddAdapter("default", 3, 8.0, 0.0)
                randomise (l.AdapterParameters "default") seed
                l
            let lin = mk (new AdaLoraLinear(torch.nn.Linear(4L, 5L, dtype = torch.float64))) 1
            let conv = mk (new AdaLoraConv2d(torch.nn.Conv2d(2L, 3L, 3L, dtype = torch.float64))) 2
            let conv1 = mk (new AdaLoraConv2d(torch.nn.Conv2d(3L, 4L, 1L, dtype = torch.float64))) 3
            let layers = [| struct ("lin", lin); struct ("conv", conv); struct ("conv1", conv1) |]
            let cfg = AdaLoraConfig(InitRank = 3, TargetRank = 1, TotalStep = 6L, TFinal = 1, OrthRegWeight = 0.5)
            let alloc = RankAllocator(layers, "default", cfg)
            Expect.equal alloc.InitialBudget 9 "3 layers × init_r 3"
            // the regulariser: the mean over all six factors of ‖AAᵀ − I‖_F / ‖BᵀB − I‖_F
            let fro (m: torch.Tensor) = use i = torch.eye(m.shape.[0], dtype = m.dtype) in use n = (m - i).norm() in n.ToDouble()
            let want =
                0.5 / 6.0 * (layers |> Array.sumBy (fun struct (_, l) ->
                    let a, b = (l.A "default").detach(), (l.B "default").detach()
                    fro (a.matmul(a.t())) + fro (b.t().matmul(b))))
            use reg = alloc.ExtraLoss()
            Expect.floatClose Accuracy.high (reg.ToDouble()) want "orthogonal regulariser over both kinds"
            for step in 1L .. 6L do
                for struct (_, l) in layers do
                    for p in l.AdapterParameters "default" do
                        use g = new torch.Generator(uint64 (step * 7L + p.numel ()))
                        p.grad <- torch.randn(p.shape, dtype = p.dtype, generator = g)
                alloc.AfterOptimizerStep step
            let pattern = alloc.RankPattern
            Expect.equal (pattern.Keys |> Set.ofSeq) (set [ "lin"; "conv"; "conv1" ]) "every layer has a pattern"
            Expect.equal (pattern.Values |> Seq.sumBy (Array.filter id >> Array.length)) 3 "budget target_r · layers, shared across kinds"
            for struct (path, l) in layers do
                let e = (l.E "default").detach().view(-1L).data<float>().ToArray()
                pattern.[path] |> Array.iteri (fun i kept -> if not kept then Expect.equal e.[i] 0.0 $"{path}: masked E[{i}] is zero")
        }
        test "AdaLoRA refuses grouped, transposed and reflect-padded convolutions, naming the layer" {
            let conv (mode: PaddingModes) groups = torch.nn.Conv2d(4L, 4L, 3L, 1L, 1L, 1L, mode, groups, true, torch.CPU, torch.float32) :> torch.nn.Module<torch.Tensor, torch.Tensor>
            let m = torch.nn.Sequential(
                        struct ("dw", conv PaddingModes.Zeros 4L),
                        struct ("refl", conv PaddingModes.Reflect 1L),
                        struct ("up", torch.nn.ConvTranspose2d(4L, 4L, 2L, stride = 2L) :> torch.nn.Module<torch.Tensor, torch.Tensor>))
            let r = Tuner.Match(m, AdaLoraConfig(Targets = [| "dw"; "refl"; "up" |], InitRank = 2, TargetRank = 1))
            let all = String.Join("\n", r.Errors)
            Expect.stringContains all "'dw' is a grouped convolution (groups=4)" "grouped named"
            Expect.stringContains all "'refl' pads with Reflect" "padding mode named"
            Expect.stringContains all "'up'" "transposed named"
        }
        test "a few training steps mask E down to the target budget and give a rank pattern" {
            torch.manual_seed 11L |> ignore
            let m = vitTiny ()
            let t = Tuner.Apply(m, AdaLoraConfig(Targets = [| "qkv"; "fc1" |], InitRank = 4, TargetRank = 2, TotalStep = 6L, TFinal = 1))
            let hook = StepHooks.Of(m) |> Seq.exactlyOne
            hook.Begin 6L
            let opt: torch.optim.Optimizer = torch.optim.SGD(t.TrainableParameters(), 0.05)
            let x = torch.randn(4L, 3L, 8L, 8L)
            for step in 1L .. 6L do
                opt.zero_grad ()
                use y = m.forward x
                use task = (y * y).mean()
                use reg = hook.ExtraLoss()
                use loss = task + reg
                loss.backward ()
                opt.step () |> ignore
                hook.AfterOptimizerStep step
            let pattern = t.RankPattern()
            Expect.equal (pattern.Count) 4 "one entry per layer"
            // after the final step the pattern is enforced again, whatever the optimiser did to E
            for struct (_, l) in t.Layers do
                use _ = torch.no_grad ()
                (l :?> AdaLoraLinear).E("default").fill_(1.0) |> ignore
            hook.AfterOptimizerStep 7L
            let kept = pattern.Values |> Seq.sumBy (fun k -> k |> Array.filter id |> Array.length)
            Expect.equal kept 8 "budget target_r · layers"
            for struct (_, l) in t.Layers do
                let a = l :?> AdaLoraLinear
                let zeros = a.E("default").eq(torch.tensor 0.0f).sum().ToInt64()
                ignore zeros
        }
    ]

let tests = testList "Tuning" [ layerTests; injectionTests; modelTests; adaloraTests ]
