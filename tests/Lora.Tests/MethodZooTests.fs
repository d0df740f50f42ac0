/// The method zoo beside LoRA: BitFit, LN tuning, (IA)³, SSF, LoHa, LoKr. For each: a fresh adapter
/// changes nothing, merged forward = unmerged forward, unmerge restores every merged base tensor
/// exactly (FsCheck over shapes, ranks and options, in float64 and float32), the forward matches a
/// reference written from the paper's / PEFT's formula, checkpoints round-trip in PEFT's keys, and
/// summaries count what the formula says.
module Lora.Tests.MethodZooTests

open System.IO
open Expecto
open TorchSharp
open TorchSharp.Modules
open Lora.Core.Tuning
open Lora.Tests.Generators
open Lora.Tests.TuningModels

let private dtypeOf (b: bool) = if b then torch.float64 else torch.float32
let private tol (dt: torch.ScalarType) = if dt = torch.float64 then 1e-9 else 2e-4

let relErr (a: torch.Tensor) (b: torch.Tensor) =
    use d = (a - b).abs().max()
    use m = b.abs().max()
    d.ToDouble() / (1.0 + m.ToDouble())

let close name dt (a: torch.Tensor) (b: torch.Tensor) =
    Expect.sequenceEqual a.shape b.shape (name + ": shape")
    let e = relErr a b
    Expect.isLessThan e (tol dt) (sprintf "%s: relative error %g" name e)

let same (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && (use d = (a - b).abs().max() in d.ToDouble() = 0.0)

let randomise (ps: Parameter seq) (seed: int) =
    use g = new torch.Generator(uint64 (abs seed))
    use _ = torch.no_grad ()
    for p in ps do
        use r = torch.randn(p.shape, dtype = p.dtype, generator = g)
        p.copy_(r * 0.3 + (if p.shape.Length = 1 || p.shape |> Array.filter ((<>) 1L) |> Array.length <= 1 then 1.0 else 0.0)) |> ignore

/// The base module's own parameters (weight, bias), cloned.
let private baseTensors (l: TunerLayer) =
    l.base_layer.named_parameters() |> Seq.map (fun struct (n, p) -> n, p.detach().clone()) |> List.ofSeq

/// A fresh adapter is the base; merged = unmerged; unmerge restores the weight and bias bit for bit.
let contract (l: TunerLayer) (x: torch.Tensor) (yBase: torch.Tensor) (exact: bool) dt (reference: unit -> torch.Tensor) seed =
    l.SetActiveAdapters [ "default" ]
    l.eval ()
    use y0 = l.forward x
    if exact then Expect.isTrue (same y0 yBase) "a fresh adapter leaves the output unchanged"
    else close "a fresh adapter leaves the output unchanged" dt y0 yBase
    randomise (l.AdapterParameters "default") seed
    use y = l.forward x
    use yr = reference ()
    close "forward vs the formula" dt y yr
    let before = baseTensors l
    l.Merge()
    l.Merge()
    use ym = l.forward x
    close "merged vs unmerged" dt ym y
    l.Unmerge()
    for (n, t) in before do
        let now = l.base_layer.named_parameters() |> Seq.find (fun struct (m, _) -> m = n) |> fun struct (_, p) -> p
        Expect.isTrue (same now t) (sprintf "unmerge restores %s exactly" n)
    use y2 = l.forward x
    Expect.isTrue (same y2 y) "forward after unmerge is the unmerged forward"

let private sizes (a: int) (b: int) = int64 (abs a % 7 + 2), int64 (abs b % 7 + 2)

let linear seed a b f64 =
    let dt = dtypeOf f64
    let i, o = sizes a b
    let lin = torch.nn.Linear(i, o, dtype = dt)
    randomise (lin.parameters ()) (seed + 1)
    use g = new torch.Generator(uint64 (abs seed))
    lin, torch.randn([| 3L; 2L; i |], dtype = dt, generator = g), dt

let conv seed (a: byte) (b: byte) (k: byte) f64 =
    let dt = dtypeOf f64
    let i, o = sizes (int a) (int b)
    let k = int64 (int k % 3 + 1)
    let c = torch.nn.Conv2d(i, o, k, stride = 1L + int64 (int a % 2), padding = int64 (int b % 2), dtype = dt)
    randomise (c.parameters ()) (seed + 1)
    use g = new torch.Generator(uint64 (abs seed))
    c, torch.randn([| 2L; i; 5L; 5L |], dtype = dt, generator = g), dt

let private conv2dWith (c: Conv2d) (x: torch.Tensor) (w: torch.Tensor) =
    torch.nn.functional.conv2d(x, w, null, c.stride, c.padding, c.dilation, c.groups)

let private slot (s: AdapterSlots) = s.Parameter "default" :> torch.Tensor

/// What `lora validate` says of method `m` at `rank` on zoo model `zoo` ("" when it fits): the core's
/// run check on the meta device, as for a spec's run.
let checkOn (m: Lora.Dsl.Method) (zoo: string) (rank: int) =
    let e: Lora.Dsl.Experiment =
        { Name = "x"; Models = [ Lora.Dsl.Zoo { Name = zoo; Options = Map.empty } ]; Datasets = [ Lora.Dsl.Builders.fashionMnist ]
          Task = Lora.Dsl.Classification; Methods = [ m ]; Ranks = [ rank ]; Seeds = [ 0 ]; Training = Lora.Dsl.Training.Defaults; Tables = []; Sweeps = []; Variants = []; Combinations = [] }
    Lora.Dsl.Grid.expand e |> List.head |> Lora.Conversion.ToCore.checkRun |> String.concat "; "

/// A tuning run of method m on the zoo ViT: what a run's hash and canonical form are taken of.
let tuningRun (m: Lora.Dsl.Method) : Lora.Dsl.Run =
    { Kind = Lora.Dsl.Tuning; Experiment = "x"; Name = "n"; Model = Lora.Dsl.Zoo { Name = "vit"; Options = Map.empty }
      Dataset = Lora.Dsl.Builders.fashionMnist; Task = Lora.Dsl.Classification; Method = m; Rank = None; Seed = 0
      Training = Lora.Dsl.Training.Defaults }

let private layerTests =
    testList "layers" [
        testProp "BitFit on Linear, Conv2d, LayerNorm: y = base(x) + Δb; merges into the bias" (fun (seed: int) (a: byte) (b: byte) (k: byte) (f64: bool) (kind: byte) ->
            let m, x, dt =
                match int kind % 3 with
                | 0 -> let l, x, dt = linear seed (int a) (int b) f64 in (l :> torch.nn.Module<torch.Tensor, torch.Tensor>), x, dt
                | 1 -> let c, x, dt = conv seed a b k f64 in (c :> torch.nn.Module<torch.Tensor, torch.Tensor>), x, dt
                | _ ->
                    let dt = dtypeOf f64
                    let n = torch.nn.LayerNorm([| int64 (int a % 7 + 2) |], dtype = dt)
                    randomise (n.parameters ()) (seed + 1)
                    use g = new torch.Generator(uint64 (abs seed))
                    n, torch.randn([| 3L; int64 (int a % 7 + 2) |], dtype = dt, generator = g), dt
            use yBase = m.forward x
            let l = new BitFitLayer(m)
            l.AddAdapter "default"
            contract l x yBase true dt (fun () ->
                let d = slot l.bitfit_bias
                if m :? Conv2d then yBase + d.view(1L, -1L, 1L, 1L) else yBase + d) seed)

        testProp "LN tuning: the copy's affine replaces the norm's; merge writes weight and bias" (fun (seed: int) (a: byte) (f64: bool) ->
            let dt = dtypeOf f64
            let c = int64 (int a % 7 + 2)
            let n = torch.nn.LayerNorm([| c |], dtype = dt)
            randomise (n.parameters ()) (seed + 1)
            use g = new torch.Generator(uint64 (abs seed))
            let x = torch.randn([| 3L; 2L; c |], dtype = dt, generator = g)
            use yBase = n.forward x
            let l = new LnTuningLayer(n)
            l.AddAdapter "default"
            contract l x yBase true dt (fun () ->
                let aff = l.Copy "default"
                use mu = x.mean([| -1L |], keepdim = true)
                use var = x.var([| -1L |], unbiased = false, keepdim = true)
                (x - mu) / (var + 1e-5).sqrt() * aff.weight + aff.bias) seed)

        testProp "(IA)³ Linear: output scaling, or input scaling on a feed-forward layer" (fun (seed: int) (a: byte) (b: byte) (f64: bool) (ff: bool) ->
            let lin, x, dt = linear seed (int a) (int b) f64
            use yBase = lin.forward x
            let l = new Ia3Layer(lin, ff)
            l.AddAdapter("default", true)
            contract l x yBase true dt (fun () ->
                let v = slot l.ia3_l
                if ff then lin.forward (x * v.flatten()) else yBase * v.flatten()) seed)

        testProp "(IA)³ Conv2d: output scaling, or input scaling on a feed-forward layer" (fun (seed: int) (a: byte) (b: byte) (k: byte) (f64: bool) (ff: bool) ->
            let c, x, dt = conv seed a b k f64
            use yBase = c.forward x
            let l = new Ia3Layer(c, ff)
            l.AddAdapter("default", true)
            contract l x yBase true dt (fun () ->
                let v = slot l.ia3_l
                if ff then c.forward (x * v) else yBase * v) seed)

        testProp "SSF on Linear, Conv2d, LayerNorm: y = γ ⊙ base(x) + β; folds into weight and bias" (fun (seed: int) (a: byte) (b: byte) (k: byte) (f64: bool) (kind: byte) ->
            let m, x, dt =
                match int kind % 3 with
                | 0 -> let l, x, dt = linear seed (int a) (int b) f64 in (l :> torch.nn.Module<torch.Tensor, torch.Tensor>), x, dt
                | 1 -> let c, x, dt = conv seed a b k f64 in (c :> torch.nn.Module<torch.Tensor, torch.Tensor>), x, dt
                | _ ->
                    let dt = dtypeOf f64
                    let n = torch.nn.LayerNorm([| int64 (int a % 7 + 2) |], dtype = dt)
                    randomise (n.parameters ()) (seed + 1)
                    use g = new torch.Generator(uint64 (abs seed))
                    n, torch.randn([| 3L; int64 (int a % 7 + 2) |], dtype = dt, generator = g), dt
            use yBase = m.forward x
            let l = new SsfLayer(m)
            l.AddAdapter("default", 0.0)
            contract l x yBase true dt (fun () ->
                let g, s = slot l.ssf_scale, slot l.ssf_shift
                if m :? Conv2d then yBase * g.view(1L, -1L, 1L, 1L) + s.view(1L, -1L, 1L, 1L) else yBase * g + s) seed)

        testProp "LoHa Linear: ΔW = (w1a·w1b) ⊙ (w2a·w2b) · α/r" (fun (seed: int) (a: byte) (b: byte) (c: byte) (f64: bool) ->
            let lin, x, dt = linear seed (int a) (int b) f64
            let r = int c % 4 + 1
            use yBase = lin.forward x
            let l = new LoHaLayer(lin)
            l.AddAdapter("default", r, 3.0, LoHaConfig(Targets = [| "x" |]))
            contract l x yBase true dt (fun () ->
                let dw = (slot l.hada_w1_a).matmul(slot l.hada_w1_b) * (slot l.hada_w2_a).matmul(slot l.hada_w2_b) * (3.0 / float r)
                yBase + x.matmul(dw.t())) seed)

        testProp "LoHa Conv2d, flattened or CP (effective conv2d)" (fun (seed: int) (a: byte) (b: byte) (k: byte) (c: byte) (f64: bool) (eff: bool) ->
            let cv, x, dt = conv seed a b k f64
            let r = int c % 3 + 1
            use yBase = cv.forward x
            let l = new LoHaLayer(cv)
            l.AddAdapter("default", r, 2.0, LoHaConfig(Targets = [| "x" |], UseEffectiveConv2d = eff))
            let cp = eff && cv.kernel_size.[0] <> 1L
            Expect.equal (l.hada_t1.Contains "default") cp "CP cores exactly for a k×k kernel with effective conv2d"
            contract l x yBase true dt (fun () ->
                let w = cv.weight
                let rebuild (t: AdapterSlots) (wa: AdapterSlots) (wb: AdapterSlots) =
                    if cp then
                        // Σ_ij t[i,j,k,l] · wb[j,c] · wa[i,o], as nested products
                        let tb = torch.tensordot(slot t, slot wb, [| 1L |], [| 0L |])          // (i, k, l, c)
                        torch.tensordot(slot wa, tb, [| 0L |], [| 0L |]).permute(0L, 3L, 1L, 2L) // (o, c, k, l)
                    else (slot wa).matmul(slot wb).reshape(w.shape)
                let dw = rebuild l.hada_t1 l.hada_w1_a l.hada_w1_b * rebuild l.hada_t2 l.hada_w2_a l.hada_w2_b * (2.0 / float r)
                yBase + conv2dWith cv x dw) seed)

        testProp "LoKr Linear: ΔW = w1 ⊗ w2 · α/r over decompositions" (fun (seed: int) (a: byte) (b: byte) (c: byte) (f64: bool) (both: bool) ->
            let dt = dtypeOf f64
            let i, o = int64 (int a % 4 + 1) * 4L, int64 (int b % 4 + 1) * 6L
            let lin = torch.nn.Linear(i, o, dtype = dt)
            randomise (lin.parameters ()) (seed + 1)
            use g = new torch.Generator(uint64 (abs seed))
            let x = torch.randn([| 3L; i |], dtype = dt, generator = g)
            let r = int c % 4 + 1
            use yBase = lin.forward x
            let l = new LoKrLayer(lin)
            l.AddAdapter("default", r, 2.0, LoKrConfig(Targets = [| "x" |], DecomposeBoth = both))
            contract l x yBase true dt (fun () ->
                let w1 = if l.lokr_w1.Contains "default" then slot l.lokr_w1 else (slot l.lokr_w1_a).matmul(slot l.lokr_w1_b)
                let w2 = if l.lokr_w2.Contains "default" then slot l.lokr_w2 else (slot l.lokr_w2_a).matmul(slot l.lokr_w2_b)
                // the Kronecker product by its definition: K[i·b + k, j·d + l] = w1[i, j] · w2[k, l]
                let k = (w1.unsqueeze(1L).unsqueeze(3L) * w2.unsqueeze(0L).unsqueeze(2L)).reshape(o, i)
                yBase + x.matmul((k * (2.0 / float r)).t())) seed)

        testProp "LoKr Conv2d: full, low-rank or CP right factor" (fun (seed: int) (a: byte) (b: byte) (k: byte) (c: byte) (f64: bool) (eff: bool) ->
            let cv, x, dt = conv seed a b k f64
            let r = int c % 3 + 1
            use yBase = cv.forward x
            let l = new LoKrLayer(cv)
            l.AddAdapter("default", r, 2.0, LoKrConfig(Targets = [| "x" |], UseEffectiveConv2d = eff))
            contract l x yBase true dt (fun () ->
                let dw = l.DeltaWeight "default"
                Expect.sequenceEqual dw.shape cv.weight.shape "ΔW has the kernel's shape"
                yBase + conv2dWith cv x dw) seed)

        testProp "VeRA Linear: y = base(x) + λb ⊙ B[:out] (λd ⊙ A[:, :in] x)" (fun (seed: int) (a: byte) (b: byte) (c: byte) (f64: bool) ->
            let lin, x, dt = linear seed (int a) (int b) f64
            let r = int c % 5 + 1
            use yBase = lin.forward x
            let struct (pa, pb) = VeraMethod.Projections(r, lin.in_features + 3L, lin.out_features + 2L, seed)
            let pa, pb = pa.to_type(dt), pb.to_type(dt)
            let l = new VeraLayer(lin)
            l.AddAdapter("default", pa, pb, VeraConfig(Targets = [| "x" |], Rank = r))
            Expect.isTrue (same (l.LambdaD "default") (torch.full(int64 r, 0.1, dtype = dt))) "λd starts at d_initial"
            contract l x yBase true dt (fun () ->
                let sa = pa.narrow(1L, 0L, lin.in_features)
                let sb = pb.narrow(0L, 0L, lin.out_features)
                yBase + (x.matmul(sa.t()) * l.LambdaD "default").matmul(sb.t()) * l.LambdaB "default") seed)

        test "VeRA's shared matrices are PEFT's draw (torch CPU generator, Kaiming-uniform, A then B)" {
            // torch 1.13: g = torch.Generator().manual_seed(0); peft.tuners.vera.model._kaiming_init((2, 3), g), then ((4, 2), g)
            let struct (a, b) = VeraMethod.Projections(2, 3L, 4L, 0)
            let expectA = torch.tensor([| -0.010587962344288826f; 0.75864577293396f; -1.1639615297317505f; -1.040774941444397f; -0.5446904897689819f; 0.3792317807674408f |]).view(2L, 3L)
            let expectB = torch.tensor([| -0.03431743383407593f; 1.3733248710632324f; -0.15370918810367584f; 0.4583223760128021f; -0.5234484076499939f; -0.34046122431755066f; -1.6547120809555054f; -1.1471062898635864f |]).view(4L, 2L)
            Expect.isLessThan (relErr a expectA) 1e-6 "vera_A as PyTorch draws it"
            Expect.isLessThan (relErr b expectB) 1e-6 "vera_B as PyTorch draws it"
        }

        test "LoKr's factorization is PEFT's (its docstring examples)" {
            for d, f, expected in [ 256L, -1, (16L, 16L); 128L, -1, (8L, 16L); 127L, -1, (1L, 127L); 128L, 4, (4L, 32L); 192L, -1, (12L, 16L) ] do
                Expect.equal (let struct (m, n) = LoKrLayer.Factorization(d, f) in (m, n)) expected (sprintf "factorization(%d, %d)" d f)
        }
    ]

/// A zoo model-shaped ViT with every method, its checkpoint in PEFT's keys, and summaries.
let twin () =
    let a = vitTiny ()
    let b = vitTiny ()
    use _ = torch.no_grad ()
    let sa = a.state_dict ()
    for KeyValue(k, v) in b.state_dict () do v.copy_(sa.[k]) |> ignore
    a.eval (); b.eval ()
    a, b

let private configs : (string * TuningConfig * string list) list =
    [ "BitFit", BitFitConfig(ModulesToSave = [| "head" |]), [ "blocks.0.attn.qkv.bitfit_bias"; "blocks.1.norm2.bitfit_bias"; "head.weight" ]
      "LN tuning", LnTuningConfig(), [ "blocks.0.norm1.ln_tuning_layers.weight"; "norm.ln_tuning_layers.bias" ]
      "(IA)³", Ia3Config(Targets = [| "qkv"; "fc2" |], FeedforwardModules = [| "fc2" |]), [ "blocks.0.attn.qkv.ia3_l"; "blocks.1.mlp.fc2.ia3_l" ]
      "SSF", SsfConfig(ModulesToSave = [| "head" |]), [ "patch_embed.proj.ssf_scale"; "blocks.0.mlp.fc1.ssf_shift" ]
      "LoHa", LoHaConfig(Targets = [| "qkv"; "proj" |], Rank = 2), [ "blocks.0.attn.qkv.hada_w1_a"; "blocks.1.attn.proj.hada_w2_b" ]
      "LoHa, effective conv2d", LoHaConfig(Targets = [| "patch_embed.proj"; "qkv" |], Rank = 2, UseEffectiveConv2d = true), [ "patch_embed.proj.hada_t1"; "patch_embed.proj.hada_t2" ]
      "VeRA", VeraConfig(Targets = [| "qkv"; "fc1" |], Rank = 4), [ "blocks.0.attn.qkv.vera_lambda_b"; "blocks.1.mlp.fc1.vera_lambda_d" ]
      "LoKr", LoKrConfig(Targets = [| "qkv"; "patch_embed.proj" |], Rank = 2, DecomposeBoth = true), [ "blocks.0.attn.qkv.lokr_w1_a"; "patch_embed.proj.lokr_w2" ] ]

/// The model round trip every mergeable method must pass on the zoo ViT: trained (random) adapters
/// change the output; save → load gives the same outputs; merged = unmerged; unload restores the
/// base exactly. `checkSaved` sees the saved state dict (PEFT's keys) and the adapter folder.
let roundTrip (config: TuningConfig) (checkSaved: System.Collections.Generic.Dictionary<string, torch.Tensor> -> string -> unit) =
    let a, b = twin ()
    use x = torch.randn(2L, 3L, 8L, 8L)
    use y0 = a.forward x
    let ta = Tuner.Apply(a, config)
    for struct (_, l) in ta.Layers do randomise (l.AdapterParameters "default") 7
    use ya = a.forward x
    Expect.isGreaterThan (relErr ya y0) 1e-6 "trained adapters change the output"
    use dir = new TempDir()
    AdapterCheckpoint.Save(ta, dir.Path)
    let saved = AdapterCheckpoint.StateDict(ta)
    checkSaved saved dir.Path
    let tb = AdapterCheckpoint.Load(b, dir.Path)
    use yb = b.forward x
    close "loaded" torch.float32 yb ya
    Expect.equal (AdapterCheckpoint.StateDict(tb).Keys |> Set.ofSeq) (saved.Keys |> Set.ofSeq) "same keys"
    Expect.equal (tb.Summary().Trainable) (ta.Summary().Trainable) "same trainable count"
    ta.Merge()
    use ym = a.forward x
    close "merged model" torch.float32 ym ya
    ta.Unmerge()
    let plain = ta.Unload() :?> torch.nn.Module<torch.Tensor, torch.Tensor>
    use yu = plain.forward x
    Expect.isTrue (same yu y0) "unloading restores the base model exactly"

let private modelTests =
    testList "models" [
        for name, config, keys in configs do
            test $"{name}: save → load gives the same outputs, in PEFT's keys; merged = unmerged on the model; unload restores the base" {
                roundTrip config (fun saved _ ->
                    for k in keys do Expect.isTrue (saved.ContainsKey("base_model.model." + k)) $"PEFT key {k}"
                    if config :? VeraConfig then
                        Expect.isTrue (saved.ContainsKey "base_model.vera_A") "VeRA's shared A, where PEFT saves it"
                        Expect.isTrue (saved.ContainsKey "base_model.vera_B") "VeRA's shared B")
            }
        test "summary counts are the formulas" {
            let count (c: TuningConfig) = (Tuner.Apply(vitTiny (), c).Summary()).Trainable
            // vitTiny: dim 16, 2 blocks, mlp 64, patch 4 (3 → 16 conv 4×4), head 16 → 5
            let d, blocks, h = 16L, 2L, 64L
            let perBlockBiases = d + 3L * d + d + d + h + d   // norm1, qkv, proj, norm2, fc1, fc2
            Expect.equal (count (BitFitConfig())) (d + blocks * perBlockBiases + d + 5L) "every bias: patch, blocks, norm, head"
            Expect.equal (count (LnTuningConfig())) ((2L * blocks + 1L) * 2L * d) "weight + bias of every LayerNorm"
            Expect.equal (count (SsfConfig())) (2L * (d + blocks * perBlockBiases + d + 5L)) "scale + shift per output channel of every layer"
            Expect.equal (count (Ia3Config(Targets = [| "qkv"; "fc2" |], FeedforwardModules = [| "fc2" |]))) (blocks * (3L * d + h)) "qkv outputs + fc2 inputs"
            Expect.equal (count (LoHaConfig(Targets = [| "qkv" |], Rank = 2))) (blocks * 2L * (3L * d * 2L + 2L * d)) "2 × (out·r + r·in)"
            // LoKr on qkv (48 × 16), r 2: 48 = 6·8, 16 = 4·4; w1 (6, 4) full; r < 8/2: w2 = (8, 2)·(2, 4)
            Expect.equal (count (VeraConfig(Targets = [| "qkv"; "fc1" |], Rank = 4))) (blocks * ((3L * d + 4L) + (h + 4L))) "λb (out) + λd (r) per layer; A and B are frozen buffers"
            Expect.equal (count (LoKrConfig(Targets = [| "qkv" |], Rank = 2))) (blocks * (6L * 4L + 8L * 2L + 2L * 4L)) "w1 + w2_a + w2_b"
        }
        test "a method on a model it does not fit says what would fit" {
            let resnetLike = torch.nn.Sequential([| ("conv", torch.nn.Conv2d(3L, 4L, 3L) :> torch.nn.Module<torch.Tensor, torch.Tensor>); ("bn", torch.nn.BatchNorm2d(4L)) |])
            let e = Tuner.Match(resnetLike, LnTuningConfig()).Errors |> String.concat "; "
            Expect.stringContains e "bitfit or ssf" "LN tuning on a BatchNorm model points to BitFit and SSF"
            let e2 = Tuner.Match(vitTiny (), Ia3Config(Targets = [| "norm1" |])).Errors |> String.concat "; "
            Expect.stringContains e2 "supported: Linear and Conv2d" "(IA)³ on a LayerNorm"
            Expect.throwsT<System.ArgumentException> (fun () -> Tuner.Match(vitTiny (), Ia3Config(Targets = [| "qkv" |], FeedforwardModules = [| "fc2" |])) |> ignore)
                "feed-forward modules must be targets (PEFT's subset rule)"
        }
        test "BitFit, LN tuning and SSF name the modules they tuned in their checkpoints (PEFT has no default targets for timm models)" {
            let t = Tuner.Apply(vitTiny (), LnTuningConfig())
            use dir = new TempDir()
            AdapterCheckpoint.Save(t, dir.Path)
            let json = File.ReadAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))
            Expect.stringContains json "blocks.1.norm2" "target_modules lists the norms"
            let struct (c, _) = AdapterCheckpoint.ReadConfig dir.Path
            Expect.equal c.Targets.Count 5 "4 block norms + the final norm"
        }
        test "AdaptFormer: fresh is the base; the checkpoint round-trips in its keys; it refuses to merge; counts" {
            let a, b = twin ()
            use x = torch.randn(2L, 3L, 8L, 8L)
            use y0 = a.forward x
            let ta = Tuner.Apply(a, AdaptFormerConfig(Width = 4, ModulesToSave = [| "head" |]))
            use yFresh = a.forward x
            Expect.isTrue (same yFresh y0) "up_proj zero: a fresh AdaptFormer adds nothing"
            randomise (ta.Attached("default").Parameters()) 11
            use ya = a.forward x
            Expect.isGreaterThan (relErr ya y0) 1e-6 "trained adapters change the output"
            use dir = new TempDir()
            AdapterCheckpoint.Save(ta, dir.Path)
            let keys = AdapterCheckpoint.StateDict(ta).Keys |> Set.ofSeq
            Expect.contains keys "base_model.model.blocks.1.adapter_mlp.down_proj.weight" "AdaptFormer key"
            Expect.isFalse (keys |> Set.exists (fun k -> k.Contains "adapter_attn")) "no attention-side adapter"
            let tb = AdapterCheckpoint.Load(b, dir.Path)
            use yb = b.forward x
            close "loaded" torch.float32 yb ya
            let e = Expect.throwsC (fun () -> ta.Merge()) (fun e -> e.Message)
            Expect.stringContains e "not mergeable" "says why"
            // 2 blocks × (down 16·4 + 4, up 4·16 + 16) + head (16·5 + 5)
            Expect.equal (tb.Summary().Trainable) (2L * (16L * 4L + 4L + 4L * 16L + 16L) + 16L * 5L + 5L) "the formula"
            let m = new AdaptFormerModule(6L, 3L)
            randomise (m.parameters ()) 3
            use z = torch.randn(2L, 6L)
            use zr = torch.nn.functional.linear(torch.nn.functional.relu(torch.nn.functional.linear(z, m.down_proj.weight, m.down_proj.bias)), m.up_proj.weight, m.up_proj.bias)
            use zm = m.forward z
            close "up(relu(down(x)))" torch.float32 zm zr
        }
        test "VPT on the zoo's ViT: fresh prompts change the output, but no weight; shallow and deep count, round-trip and refuse to merge" {
            let make () =
                let args = Lora.Core.Models.ModelArgs.Empty.With("img_size", 8L).With("patch_size", 4L).With("embed_dim", 16L).With("depth", 2L).With("num_heads", 2L).With("num_classes", 3L)
                Lora.Core.Models.Zoo.Create("vit", args, torch.CPU)
            for deep in [ false; true ] do
                let a = make ()
                let b = make ()
                let sa = a.state_dict ()
                do
                    use _ = torch.no_grad ()
                    for KeyValue(k, v) in b.state_dict () do v.copy_(sa.[k]) |> ignore
                a.eval (); b.eval ()
                use x = torch.randn(2L, 3L, 8L, 8L)
                let fa = a
                use y0 = fa.forward x
                let ta = Tuner.Apply(a, VptConfig(Tokens = 3, Deep = deep))
                use ya = fa.forward x
                Expect.sequenceEqual ya.shape y0.shape "same output shape (the prompts' outputs are dropped)"
                Expect.isGreaterThan (relErr ya y0) 1e-7 "prompts take part in attention"
                Expect.equal (ta.Summary().Trainable) ((if deep then 2L else 1L) * 3L * 16L) "layers × tokens × dim"
                use dir = new TempDir()
                AdapterCheckpoint.Save(ta, dir.Path)
                Expect.contains (AdapterCheckpoint.StateDict(ta).Keys |> Set.ofSeq) "base_model.model.prompt.prompt_embeddings" "key"
                let json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))).AsObject()
                Expect.equal (PeftConfigTests.violations json) [] "VPT's adapter_config.json passes its rules"
                AdapterCheckpoint.Load(b, dir.Path) |> ignore
                use yb = b.forward x
                close "loaded" torch.float32 yb ya
                Expect.throwsT<System.InvalidOperationException> (fun () -> ta.Merge()) "VPT cannot merge"
                Expect.isNull (Lora.Core.Onnx.ZooExport.Problem a) "ONNX export writes the prompts into the graph (ZooExportTests checks it against ONNX Runtime)"
                ta.DisableAdapters()
                use yOff = fa.forward x
                Expect.isTrue (same yOff y0) "disabled: the base model exactly"
        }
        test "non-mergeable? none of these: every one merges" {
            for _, c, _ in configs do Expect.isNull c.Method.NotMergeable $"{c.Method.Name} merges"
        }
    ]

/// The methods in the spec vocabulary: YAML options, conversion to Core, and validate's errors.
let private specTests =
    testList "specs" [
        test "every method parses from YAML with its options and converts to its Core config" {
            let conv text rank =
                match Lora.Conversion.ToCore.parseMethod text rank with
                | Ok m -> m, Lora.Conversion.ToCore.methodOf (lazy "head") rank m
                | Error e -> failtestf "%s: %A" text e
            let cfg (_, c) = match c with Lora.Conversion.CoreMethod.Tune c -> c | _ -> failtest "a tuning config"
            Expect.equal (cfg (conv "bitfit" None)).Method.Name "BitFit" "bitfit"
            Expect.equal (cfg (conv "ln_tuning: { targets: [norm1] }" None)).Targets.[0] "norm1" "ln_tuning targets"
            let ia3 = cfg (conv "ia3" None) :?> Ia3Config
            Expect.sequenceEqual ia3.FeedforwardModules [ "fc2" ] "PEFT's ViT feed-forward default"
            Expect.sequenceEqual ia3.ModulesToSave [ "head" ] "head trains"
            Expect.isEmpty (cfg (conv "ia3: { targets: [qkv] }" None) :?> Ia3Config).FeedforwardModules "own targets: no default feed-forward"
            let ssf = cfg (conv "ssf: { modules_to_save: [] }" None)
            Expect.isEmpty ssf.ModulesToSave "ssf without head"
            let loha = cfg (conv "loha: { effective_conv2d: true }" (Some 4)) :?> LoHaConfig
            Expect.equal (loha.Rank, loha.Alpha, loha.UseEffectiveConv2d) (4, 8.0, true) "rank from the grid, alpha 2 × rank"
            let lokr = cfg (conv "lokr: { alpha: 3, decompose_both: true, decompose_factor: 4 }" (Some 2)) :?> LoKrConfig
            Expect.equal (lokr.Alpha, lokr.DecomposeBoth, lokr.DecomposeFactor) (3.0, true, 4) "LoKr options"
        }
        test "wrong options are located errors naming what applies" {
            let err text = match Lora.Dsl.YamlSpec.method text with Error e -> String.concat "; " e | Ok _ -> failtestf "%s parsed" text
            Expect.stringContains (err "bitfit: { alpha: 4 }") "option of" "alpha is not BitFit's"
            Expect.stringContains (err "ia3: { feedforward: fc2 }") "expected a list" "feedforward is a list"
            Expect.stringContains (err "lokr: { decompose_factor: x }") "an integer" "decompose_factor"
            match Lora.Conversion.ToCore.parseMethod "ia3: { targets: [qkv], feedforward: [fc2] }" None with
            | Error e -> Expect.stringContains (String.concat "; " e) "not among the targets" "PEFT's subset rule, before any model"
            | Ok _ -> failtest "feed-forward outside the targets must fail"
        }
        test "validate: a method on a zoo model it does not fit says what would fit" {
            let run m zoo = checkOn m zoo 2
            Expect.stringContains (run Lora.Dsl.Builders.lnTuning "resnet18") "bitfit or ssf" "LN tuning on a ResNet"
            Expect.equal (run Lora.Dsl.Builders.bitfit "resnet18") "" "BitFit fits a ResNet"
            Expect.equal (run Lora.Dsl.Builders.ssf "convnext_tiny") "" "SSF fits a ConvNeXt"
            Expect.stringContains (run Lora.Dsl.Builders.ia3 "resnet18") "matches no module" "(IA)³'s ViT targets on a ResNet"
        }
        test "the new methods' runs hash apart, and a LoRA run's canonical form has none of their fields" {
            let methods = (let b = Lora.Dsl.Builders.bitfit in [ b; Lora.Dsl.Builders.lnTuning; Lora.Dsl.Builders.ia3; Lora.Dsl.Builders.ssf; Lora.Dsl.Builders.loha; Lora.Dsl.Builders.lokr; Lora.Dsl.Builders.lora ])
            let hashes = methods |> List.map (tuningRun >> Lora.Dsl.Canonical.hash)
            Expect.equal (List.distinct hashes).Length methods.Length "distinct hashes"
            let loraJson = Lora.Dsl.Canonical.json (tuningRun Lora.Dsl.Builders.lora)
            for f in [ "feedforward"; "effective_conv2d"; "decompose" ] do Expect.isFalse (loraJson.Contains f) $"no {f} in LoRA's form"
        }
    ]

let tests = testList "MethodZoo" [ layerTests; modelTests; specTests ]
