/// LoRA's options (issue 20): PiSSA / OLoRA initialisation (W_res + s·B·A = W at init, in float64),
/// LoRA+ (lora_B's AdamW step ratio × as large), q/v-only LoRA on a fused qkv Linear (loralib's
/// MergedLinear), LoRA on ConvTranspose2d (exact merge against a float64 reference); their spec keys,
/// located errors, hashes that do not move for runs without them, and summary counts.
module Lora.Tests.LoraOptionsTests

open System
open System.IO
open Expecto
open TorchSharp
open TorchSharp.Modules
open Lora.Core.IO
open Lora.Core.Training
open Lora.Core.Tuning
open Lora.Dsl
open Lora.Tests.Generators
open Lora.Tests.TuningModels

let private maxAbs (a: torch.Tensor) = (use d = a.abs().max() in d.ToDouble())

let private close (name: string) (tol: float) (a: torch.Tensor) (b: torch.Tensor) =
    Expect.sequenceEqual a.shape b.shape (name + ": shape")
    use d = a - b
    let e = maxAbs d / (1.0 + maxAbs b)
    Expect.isLessThan e tol (sprintf "%s: relative error %g" name e)

let private same (a: torch.Tensor) (b: torch.Tensor) = a.shape = b.shape && (use d = a - b in maxAbs d = 0.0)

let private randomise (ps: Parameter seq) (seed: int) =
    use g = new torch.Generator(uint64 (abs seed))
    use _ = torch.no_grad ()
    for p in ps do
        use r = torch.randn(p.shape, dtype = p.dtype, generator = g)
        p.copy_(r * 0.3) |> ignore

/// A random float64 Linear(i, o) and an input (3, 2, i).
let private linear seed (i: int64) (o: int64) =
    let lin = torch.nn.Linear(i, o, dtype = torch.float64)
    randomise (lin.parameters ()) (seed + 1)
    use g = new torch.Generator(uint64 (abs seed))
    lin, torch.randn([| 3L; 2L; i |], dtype = torch.float64, generator = g)

/// Merged forward = unmerged forward; unmerge restores the base weight bit for bit.
let private mergeContract (l: TunerLayer) (x: torch.Tensor) (y: torch.Tensor) =
    use before = l.BaseWeight.detach().clone()
    l.Merge()
    use ym = l.forward x
    close "merged vs unmerged" 1e-10 ym y
    l.Unmerge()
    Expect.isTrue (same l.BaseWeight before) "unmerge restores the (residual) base weight exactly"

/// Two identical tiny ViTs, so that two adapters can be compared from one starting point.
let private twin () =
    let a = vitTiny ()
    let b = vitTiny ()
    use _ = torch.no_grad ()
    let sa = a.state_dict ()
    for KeyValue(k, v) in b.state_dict () do v.copy_(sa.[k]) |> ignore
    a.eval ()
    b.eval ()
    a, b

/// Save the adapter of `ta` and load it onto `b` (the original base): same outputs; the config text.
let private saveLoad (a: torch.nn.Module<torch.Tensor, torch.Tensor>) (ta: TunedModel) (b: torch.nn.Module<torch.Tensor, torch.Tensor>) =
    use dir = new TempDir()
    AdapterCheckpoint.Save(ta, dir.Path)
    AdapterCheckpoint.Load(b, dir.Path) |> ignore
    use x = torch.randn(2L, 3L, 8L, 8L)
    use ya = a.forward x
    use yb = b.forward x
    close "save → load onto the original base" 1e-5 yb ya
    File.ReadAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))

let private initTests =
    testList "PiSSA and OLoRA" [
        testProp "W_res + s·B·A = W at init in float64; the output is unchanged; merge is exact" (fun (seed: int) (a: byte) (b: byte) (c: byte) (kind: byte) ->
            let i, o = int64 (int a % 7 + 2), int64 (int b % 7 + 2)
            let lin, x = linear seed i o
            use w0 = lin.weight.detach().clone()
            use yBase = lin.forward x
            let r = int c % int (min i o) + 1
            let alpha = float (int c % 5 + 1)
            let init, niter = match int kind % 3 with 0 -> LoraInit.Pissa, Nullable() | 1 -> LoraInit.Pissa, Nullable 2 | _ -> LoraInit.Olora, Nullable()
            let l = new LoraLinear(lin)
            l.AddAdapter("default", LoraOptions(r, alpha, Init = init, PissaNiter = niter))
            l.SetActiveAdapters [ "default" ]
            let s = alpha / float r
            use ba = l.WeightB("default").matmul(l.WeightA "default") * s
            close "W_res + s·B·A = W" 1e-12 (lin.weight + ba) w0
            Expect.isFalse (same lin.weight w0) "the base weight is residualised in place"
            use y0 = l.forward x
            close "a fresh PiSSA/OLoRA adapter leaves the output unchanged" 1e-12 y0 yBase
            if init = LoraInit.Pissa && not niter.HasValue then
                // s·B·A is W's best rank-r approximation U_r·S_r·Vh_r
                let struct (u, sv, vh) = torch.linalg.svd(w0, fullMatrices = false)
                use best = (u.narrow(1, 0L, int64 r) * sv.narrow(0, 0L, int64 r).unsqueeze 0).matmul(vh.narrow(0, 0L, int64 r))
                close "PiSSA's s·B·A = U_r·S_r·Vh_r" 1e-10 ba best
            if init = LoraInit.Olora then
                use btb = l.WeightB("default").t().matmul(l.WeightB "default")
                close "OLoRA's B has orthonormal columns" 1e-12 btb (torch.eye(int64 r, dtype = torch.float64))
            randomise (l.AdapterParameters "default") seed
            use y = l.forward x
            mergeContract l x y)

        test "PiSSA and OLoRA refuse a Conv2d target (PEFT initialises Linear layers only)" {
            let m = new ConvNeXtT(torch.CPU)
            let e = Expect.throwsC (fun () -> Tuner.Apply(m, LoraConfig(Targets = [| "conv_dw" |], Rank = 2, Init = LoraInit.Olora)) |> ignore) id
            Expect.stringContains e.Message "olora initialisation applies to Linear layers only" "names the init and the layer kind"
        }

        test "a PiSSA adapter saves init_lora_weights \"pissa\" and loads onto the original base exactly (the residual is recomputed)" {
            let a, b = twin ()
            let ta = Tuner.Apply(a, LoraConfig(Targets = [| "qkv" |], Rank = 2, Alpha = 4.0, Init = LoraInit.Pissa, PissaNiter = Nullable 3))
            for struct (_, l) in ta.Layers do randomise (l.AdapterParameters "default") 7
            let json = saveLoad a ta b
            Expect.stringContains json "\"init_lora_weights\": \"pissa_niter_3\"" "PEFT's init_lora_weights"
            Expect.stringContains json "\"peft_type\": \"LORA\"" "PEFT loads it (it recomputes the residual as we do)"
        }

        test "an OLoRA adapter round-trips too" {
            let a, b = twin ()
            let ta = Tuner.Apply(a, LoraConfig(Targets = [| "qkv"; "fc1" |], Rank = 3, Init = LoraInit.Olora))
            for struct (_, l) in ta.Layers do randomise (l.AdapterParameters "default") 8
            Expect.stringContains (saveLoad a ta b) "\"init_lora_weights\": \"olora\"" "PEFT's init_lora_weights"
        } ]

/// One AdamW step (weight decay 0) of a tiny ViT with LoRA on qkv and a trained head; the step's change
/// of every trainable parameter, by name.
let private oneStep (ratio: float option) =
    let a, _ = twin ()
    // the same base in both calls (vitTiny draws from the global generator)
    randomise (a.parameters ()) 11
    let config = LoraConfig(Targets = [| "qkv" |], Rank = 2, ModulesToSave = [| "head" |], LoraPlusLrRatio = Option.toNullable ratio)
    let t = Tuner.Apply(a, config)
    // B nonzero, so that A gets a gradient too
    for struct (_, l) in t.Layers do randomise (l.AdapterParameters "default") 3
    a.train ()
    use step = new TrainingStep(a, 0.0, 0.9, 0.999, 1e-8, 0.0)
    let before = step.Trainable |> Array.map (fun struct (n, p) -> n, p.detach().clone())
    use g = new torch.Generator(5UL)
    use x = torch.randn([| 2L; 3L; 8L; 8L |], generator = g)
    use loss = a.forward(x).square().mean()
    step.BackwardAndStep(loss, 1e-3)
    step.Trainable |> Array.map (fun struct (n, p) -> n, p.detach() - (before |> Array.find (fun (m, _) -> m = n) |> snd)) |> Map.ofArray

let private loraPlusTests =
    testList "LoRA+" [
        test "lora_B's (and every vector's) AdamW update is ratio × as large; lora_A's and the head matrix's are unchanged" {
            let plain = oneStep None
            let plus = oneStep (Some 4.0)
            Expect.equal (Set.ofSeq plus.Keys) (Set.ofSeq plain.Keys) "the same trainable parameters"
            let bs = plain.Keys |> Seq.filter (fun n -> n.Contains "lora_B") |> List.ofSeq
            Expect.isNonEmpty bs "lora_B parameters train"
            for KeyValue(n, d) in plain do
                let scaled = n.Contains "lora_B" || d.dim () = 1L
                Expect.isGreaterThan (maxAbs d) 0.0 (sprintf "%s moved" n)
                use expected = if scaled then d * 4.0 else d
                close (sprintf "%s: update %s" n (if scaled then "× 4" else "unchanged")) 1e-5 plus.[n] expected
        }

        test "LoRA+ puts lora_B in groups of their own: the optimiser's parameter count is unchanged" {
            let a, _ = twin ()
            Tuner.Apply(a, LoraConfig(Targets = [| "qkv" |], Rank = 2, LoraPlusLrRatio = Nullable 16.0)) |> ignore
            Expect.equal (LoraPlus.Ratio a) (Nullable 16.0) "the model's LoRA+ ratio"
            use step = new TrainingStep(a, 0.01, 0.9, 0.999, 1e-8, 0.0)
            Expect.equal step.Optimizer.Numel (step.Trainable |> Array.sumBy (fun struct (_, p) -> p.numel ())) "every trainable element once"
        } ]

let private fusedTests =
    testList "q/v-only LoRA on a fused qkv" [
        testProp "ΔW = B_i·A_i·s on the enabled thirds, zero on the others; k·r·(in + out/3) parameters; merge exact" (fun (seed: int) (a: byte) (b: byte) (c: byte) (mask: byte) ->
            let i, part = int64 (int a % 7 + 2), int64 (int b % 4 + 1)
            let lin, x = linear seed i (3L * part)
            use yBase = lin.forward x
            let parts = let m = int mask % 7 + 1 in [| m &&& 1 <> 0; m &&& 2 <> 0; m &&& 4 <> 0 |]
            let k = parts |> Array.filter id |> Array.length
            let r = int c % int (min i part) + 1
            let l = new LoraLinear(lin)
            l.AddAdapter("default", LoraOptions(r, 3.0, FusedParts = parts))
            l.SetActiveAdapters [ "default" ]
            let count = l.AdapterParameters "default" |> Seq.sumBy (fun p -> p.numel ())
            Expect.equal count (int64 k * int64 r * (i + part)) "k·r·(in + out/3)"
            use y0 = l.forward x
            Expect.isTrue (same y0 yBase) "a fresh adapter leaves the output unchanged"
            randomise (l.AdapterParameters "default") seed
            use y = l.forward x
            // reference: each enabled part's block written out, the rest zero
            let wa, wb = l.WeightA "default", l.WeightB "default"
            use dw = torch.zeros([| 3L * part; i |], dtype = torch.float64)
            let mutable j = 0L
            for p in 0..2 do
                if parts.[p] then
                    use blk = wb.narrow(0, j * part, part).matmul(wa.narrow(0, j * int64 r, int64 r)) * (3.0 / float r)
                    dw.narrow(0, int64 p * part, part).copy_(blk) |> ignore
                    j <- j + 1L
            use yr = yBase + x.matmul(dw.t())
            close "forward vs the block formula" 1e-12 y yr
            for p in 0..2 do
                if not parts.[p] then
                    Expect.isTrue (same (y.narrow(-1, int64 p * part, part)) (yBase.narrow(-1, int64 p * part, part))) (sprintf "part %d is untouched" p)
            close "DeltaWeight = the block formula" 1e-12 (l.DeltaWeight "default") dw
            mergeContract l x y)

        test "a fused q/v adapter saves as this project's LORA_FUSED_QKV (PEFT cannot load it) and round-trips" {
            let a, b = twin ()
            let ta = Tuner.Apply(a, LoraConfig(Targets = [| "qkv" |], Rank = 2, FusedQkv = [| "q"; "v" |]))
            let count = ta.Layers |> Seq.sumBy (fun struct (_, l) -> l.AdapterParameters "default" |> Seq.sumBy (fun p -> p.numel ()))
            Expect.equal count (2L * 2L * 2L * (16L + 16L)) "depth 2 × k 2 × r 2 × (in 16 + out/3 16)"
            for struct (_, l) in ta.Layers do randomise (l.AdapterParameters "default") 9
            let json = saveLoad a ta b
            Expect.stringContains json "\"peft_type\": \"LORA_FUSED_QKV\"" "not PEFT's LORA"
            Expect.stringContains json "\"fused_qkv\"" "the parts are saved"
        }

        test "fused_qkv refuses a Linear whose out features are not three equal parts" {
            let m = vitTiny ()
            let e = Expect.throwsC (fun () -> Tuner.Apply(m, LoraConfig(Targets = [| "fc2" |], Rank = 2, FusedQkv = [| "q"; "v" |])) |> ignore) id
            Expect.stringContains e.Message "not divisible into q, k, v thirds" "says why"
        } ]

let private convTransposeTests =
    testList "LoRA on ConvTranspose2d" [
        testProp "B(A(x)) = conv_transpose2d(x, ΔW), ΔW[i,o] = Σ_j A[i,j]·B[o,j]·s, against a float64 reference; merge exact" (fun (seed: int) (a: byte) (b: byte) (k: byte) (c: byte) ->
            let i, o = int64 (int a % 5 + 1), int64 (int b % 5 + 1)
            let ks = int64 (int k % 3 + 1)
            let stride = 1L + int64 (int a % 2)
            let padding = int64 (int b % int ks)
            let outPad = if stride = 2L then int64 (int k % 2) else 0L
            let ct = torch.nn.ConvTranspose2d(i, o, ks, stride = stride, padding = padding, output_padding = outPad, dtype = torch.float64)
            randomise (ct.parameters ()) (seed + 1)
            use g = new torch.Generator(uint64 (abs seed))
            use x = torch.randn([| 2L; i; 4L; 5L |], dtype = torch.float64, generator = g)
            use yBase = ct.forward x
            let r = int c % int (min (i * ks * ks) o) + 1
            let l = new LoraConvTranspose2d(ct)
            l.AddAdapter("default", LoraOptions(r, 2.0))
            l.SetActiveAdapters [ "default" ]
            Expect.equal (l.AdapterParameters "default" |> Seq.sumBy (fun p -> p.numel ())) (int64 r * (i * ks * ks + o)) "r·(in·kh·kw + out)"
            use y0 = l.forward x
            Expect.isTrue (same y0 yBase) "a fresh adapter leaves the output unchanged"
            randomise (l.AdapterParameters "default") seed
            use y = l.forward x
            // the reference: a ConvTranspose2d of the same geometry holding W + ΔW
            let wa, wb = l.WeightA "default", l.WeightB "default"
            use dw = torch.tensordot(wa, wb.flatten(1L), [| 1L |], [| 1L |]).permute(0L, 3L, 1L, 2L) * (2.0 / float r)
            let reference = torch.nn.ConvTranspose2d(i, o, ks, stride = stride, padding = padding, output_padding = outPad, dtype = torch.float64)
            using (torch.no_grad ()) (fun _ ->
                reference.weight.copy_(ct.weight + dw) |> ignore
                reference.bias.copy_(ct.bias) |> ignore)
            use yr = reference.forward x
            close "forward vs conv_transpose2d(x, W + ΔW)" 1e-12 y yr
            close "DeltaWeight" 1e-12 (l.DeltaWeight "default") dw
            mergeContract l x y)

        test "DoRA on a ConvTranspose2d is refused at matching, naming the layer" {
            let m = new Lora.Core.Models.UNet(Lora.Core.Models.UNetConfig(base_width = 4L, depth = 2L))
            let e = Expect.throwsC (fun () -> Tuner.Apply(m, LoraConfig(Targets = [| "up" |], Rank = 2, UseDora = true)) |> ignore) id
            Expect.stringContains e.Message "DoRA is not defined on transposed convolutions" "says why"
        }

        test "lora summary unet --targets up counts r·(in·kh·kw + out) per up-convolution" {
            let code, out, err = runLora [ "summary"; "unet"; "--rank"; "2"; "--targets"; "up" ]
            Expect.equal code 0 err
            // UNet base width 32, depth 4: up convolutions 512→256, 256→128, 128→64, 64→32, 2×2 kernels
            let expected = [ 512, 256; 256, 128; 128, 64; 64, 32 ] |> List.sumBy (fun (i, o) -> 2 * (i * 4 + o))
            Expect.stringContains out (sprintf "Trainable params: %s" (expected.ToString("N0", Globalization.CultureInfo.InvariantCulture))) "the formula's count"
            Expect.stringContains out "ups.*.up ×4" "the four up-convolutions"
        } ]

let private specText (methods: string) =
    DslTests.baseSpec.Replace("methods: [lora]", "methods: " + methods)

let private firstRun (methods: string) =
    match DslTests.parseOk (specText methods) with
    | [ e ] -> Grid.expand e |> List.head
    | es -> failtestf "expected one experiment, got %d" es.Length

let private specTests =
    testList "spec keys" [
        test "init, loraplus_lr_ratio and fused_qkv parse into lora's options" {
            let r = firstRun "[{lora: {init: pissa_niter_4, loraplus_lr_ratio: 16}}, {lora: {name: lora-qv, fused_qkv: [q, v]}}]"
            match r.Method with
            | Lora o ->
                Expect.equal o.Init (PissaInit(Some 4)) "init"
                Expect.equal o.LoraPlusRatio (Some 16.0) "LoRA+"
            | m -> failtestf "expected lora, got %A" m
            let qv = firstRun "[{lora: {fused_qkv: [q, v]}}]"
            match qv.Method with
            | Lora o -> Expect.equal o.FusedQkv [ "q"; "v" ] "a list option, not an axis"
            | m -> failtestf "expected lora, got %A" m
        }

        test "runs without the new keys hash as before; each key, when set, changes the hash" {
            let plain = firstRun "[lora]"
            let json = Canonical.json plain
            for k in [ "\"init\""; "loraplus"; "fused_qkv" ] do Expect.isFalse (json.Contains k) (sprintf "%s is not written at its default" k)
            let h = Canonical.hash plain
            for m in [ "[{lora: {init: olora}}]"; "[{lora: {loraplus_lr_ratio: 16}}]"; "[{lora: {fused_qkv: [q, v]}}]"; "[{lora: {init: default}}]" ] do
                let hm = Canonical.hash (firstRun m)
                if m.Contains "default" then Expect.equal hm h "init: default is the default"
                else Expect.notEqual hm h (sprintf "%s changes the hash" m)
        }

        test "the spec writer writes the keys back (write → parse is the identity)" {
            let e = DslTests.parseOk (specText "[{lora: {init: olora, loraplus_lr_ratio: 2.5, fused_qkv: [v]}}]") |> List.head
            let back = DslTests.parseOk (YamlSpec.write [ e ]) |> List.head
            Expect.equal (Grid.expand back |> List.map Canonical.hash) (Grid.expand e |> List.map Canonical.hash) "same runs"
        }

        test "the F# modifiers set the same options" {
            match lora |> loraInit OloraInit |> loraPlus 16.0 |> fusedQkv [ "q"; "v" ] with
            | Lora o -> Expect.equal (o.Init, o.LoraPlusRatio, o.FusedQkv) (OloraInit, Some 16.0, [ "q"; "v" ]) "init, ratio, parts"
            | m -> failtestf "expected lora, got %A" m
        }

        let cases =
            [ "unknown init", "[{lora: {init: pisa}}]", "experiments[0].methods[0].init", "pisa", "unknown init 'pisa' (did you mean pissa?)"
              "pissa_niter without K", "[{lora: {init: pissa_niter_x}}]", "experiments[0].methods[0].init", "pissa_niter_x", "pissa_niter_K needs a whole number"
              "loraplus ratio negative", "[{lora: {loraplus_lr_ratio: -1}}]", "experiments[0].methods[0].loraplus_lr_ratio", "-1", "loraplus_lr_ratio must be a positive number"
              "fused part unknown", "[{lora: {fused_qkv: [q, x]}}]", "experiments[0].methods[0].fused_qkv", "[q, x]", "fused_qkv part 'x' is not one of q, k, v"
              "fused no part", "[{lora: {fused_qkv: []}}]", "experiments[0].methods[0].fused_qkv", "[]", "fused_qkv: [] names no part"
              "fused part twice", "[{lora: {fused_qkv: [q, q]}}]", "experiments[0].methods[0].fused_qkv", "[q, q]", "fused_qkv names a part twice"
              "fused DoRA", "[{dora: {fused_qkv: [q, v]}}]", "experiments[0].methods[0].fused_qkv", "[q, v]", "has no DoRA form"
              "fused PiSSA", "[{lora: {init: pissa, fused_qkv: [q, v]}}]", "experiments[0].methods[0].init", "pissa,", "not defined with fused_qkv"
              "init on adalora", "[{adalora: {init: pissa}}]", "experiments[0].methods[0].init", "init", "'init' does not apply to adalora" ]
        for case, methods, field, needle, message in cases do
            test ("located error: " + case) {
                let text = specText methods
                let errs = DslTests.errorsOf ".yaml" DslTests.fakeExists text
                let line, col = DslTests.locate text needle 0
                match errs |> List.tryFind (fun e -> e.Field = field) with
                | Some e ->
                    Expect.stringContains e.Message message "message"
                    Expect.equal (e.Line, e.Column) (line, col) (sprintf "location of %s" field)
                | None -> failtestf "no error for %s; got:\n%s" field (errs |> List.map string |> String.concat "\n")
            } ]

let tests = testList "LoraOptions" [ initTests; loraPlusTests; fusedTests; convTransposeTests; specTests ]
