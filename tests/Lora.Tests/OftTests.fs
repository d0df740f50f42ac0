/// OFT (PEFT's OFTConfig / oft layers): the forward against PEFT's formula written out here
/// (skew-symmetric blocks from the upper triangle, the exact Cayley transform or PEFT's Neumann
/// series, torch.block_diag, the input rotated before a Linear, Wᵀ ← R·Wᵀ for a Conv2d), a fresh
/// adapter is the base, merged = unmerged, unmerge restores W exactly (FsCheck, float64 and
/// float32), COFT's projection, module dropout, PEFT's r / oft_block_size adjustment, counts,
/// checkpoints in PEFT's keys and config, the spec vocabulary and validate's errors.
module Lora.Tests.OftTests

open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open TorchSharp.Modules
open Lora.Core.Tuning
open Lora.Tests.Generators
open Lora.Tests.TuningModels
open Lora.Tests.MethodZooTests

/// PEFT's R for one stored weight row: Q from the row-major upper triangle, then Cayley.
let private peftBlock (v: torch.Tensor) (b: int) (neumann: bool) (terms: int) =
    let q = torch.zeros([| int64 b; int64 b |], dtype = v.dtype)
    let mutable k = 0L
    for i in 0 .. b - 1 do
        for j in i + 1 .. b - 1 do
            let x = v.[k].ToDouble()
            q.[int64 i, int64 j] <- torch.tensor(x, dtype = v.dtype)
            q.[int64 j, int64 i] <- torch.tensor(-x, dtype = v.dtype)
            k <- k + 1L
    let eye = torch.eye(int64 b, dtype = v.dtype)
    if not neumann then (eye - q).matmul(torch.linalg.inv(eye + q))
    else
        // PEFT's _cayley_batch: I + 2Q + 2Q² + … + 2Q^(n−2) + Q^(n−1) (n ≥ 4; n = 3 adds Q³ too)
        let pow n = Seq.fold (fun (acc: torch.Tensor) _ -> acc.matmul q) eye (seq { 1 .. n })
        if terms = 1 then eye
        elif terms = 2 then eye + 2.0 * q
        else
            let last = max 3 (terms - 1)
            let mutable r = eye + 2.0 * q
            for p in 2 .. last - 1 do r <- r + 2.0 * pow p
            r + pow last

/// torch.block_diag of the layer's blocks (a shared one repeated).
let private peftMatrix (l: OftLayer) =
    let rot = l.Rotation "default"
    let w = rot.weight.detach()
    let c = rot.Config
    let blocks = [| for i in 0 .. rot.Blocks - 1 -> peftBlock w.[(if c.BlockShare then 0L else int64 i)] rot.BlockSize c.UseCayleyNeumann c.NumCayleyNeumannTerms |]
    torch.block_diag blocks

let private options (neumann: bool) (share: bool) (byRank: bool) (size: byte) =
    let n = int size % 4 + 2
    OftConfig(Targets = [| "x" |], UseCayleyNeumann = neumann, BlockShare = share, Rank = (if byRank then n else 0), BlockSize = (if byRank then 0 else n))

let private small (l: OftLayer) =
    // a rotation near the identity, as training keeps it (the Neumann series is a good Cayley there)
    use _ = torch.no_grad ()
    let w = (l.Rotation "default").weight
    w.mul_(torch.tensor 0.3) |> ignore

let private layerTests =
    testList "layers" [
        testProp "OFT Linear: y = base(x·R), R = block_diag(Cayley(Q)) as PEFT; fresh = base; merge = unmerged; unmerge exact" (fun (seed: int) (a: byte) (b: byte) (f64: bool) (neumann: bool) (share: bool) (byRank: bool) (size: byte) ->
            let lin, x, dt = linear seed (int a) (int b) f64
            use yBase = lin.forward x
            let l = new OftLayer(lin)
            l.AddAdapter("default", options neumann share byRank size)
            contract l x yBase true dt (fun () ->
                let r = peftMatrix l
                lin.forward (x.matmul r)) seed)

        testProp "OFT Conv2d: W' = (R·W.view(out, in·k²)ᵀ)ᵀ as PEFT's merge; fresh = base; merge = unmerged; unmerge exact" (fun (seed: int) (a: byte) (b: byte) (k: byte) (f64: bool) (neumann: bool) (share: bool) (byRank: bool) (size: byte) ->
            let c, x, dt = conv seed a b k f64
            use yBase = c.forward x
            let l = new OftLayer(c)
            l.AddAdapter("default", options neumann share byRank size)
            contract l x yBase true dt (fun () ->
                let r = peftMatrix l
                let w = c.weight.detach()
                let w' = r.matmul(w.view(w.shape.[0], -1L).t()).t().reshape(w.shape)
                torch.nn.functional.conv2d(x, w', c.bias, c.stride, c.padding, c.dilation, c.groups)) seed)

        test "a 1×1 Conv2d: the rotated weight is PEFT's rotated input per pixel (its unfold forward)" {
            let c = torch.nn.Conv2d(6L, 3L, 1L, dtype = torch.float64)
            let l = new OftLayer(c)
            l.AddAdapter("default", OftConfig(Targets = [| "x" |], BlockSize = 3))
            l.SetActiveAdapters [ "default" ]
            randomise (l.AdapterParameters "default") 5
            small l
            use x = torch.randn([| 2L; 6L; 4L; 4L |], dtype = torch.float64)
            let r = peftMatrix l
            // (B, C, H, W) → per pixel rows (·, C) · R → back
            use xr = x.permute(0L, 2L, 3L, 1L).matmul(r).permute(0L, 3L, 1L, 2L)
            use y = l.forward x
            use yr = c.forward xr
            close "rotated input" torch.float64 y yr
        }

        test "the exact Cayley transform is orthogonal; PEFT's Neumann series is the same with −Q, to its order" {
            let lin = torch.nn.Linear(8L, 2L, dtype = torch.float64)
            let exact = new OftLayer(lin)
            exact.AddAdapter("default", OftConfig(Targets = [| "x" |], BlockSize = 4, UseCayleyNeumann = false))
            randomise (exact.AdapterParameters "default") 3
            use r = (exact.Rotation "default").Rotations()
            use rrt = r.bmm(r.transpose(1L, 2L))
            close "R·Rᵀ = I" torch.float64 rrt (torch.eye(4L, dtype = torch.float64).expand(2L, 4L, 4L))
            // the Neumann series of (I − Q)⁻¹(I + Q): exact Cayley of −Q, to O(Q⁴)
            let w = (exact.Rotation "default").weight
            do
                use _ = torch.no_grad ()
                w.mul_(torch.tensor 1e-3) |> ignore
            let neumann = new OftLayer(torch.nn.Linear(8L, 2L, dtype = torch.float64))
            neumann.AddAdapter("default", OftConfig(Targets = [| "x" |], BlockSize = 4))
            do
                use _ = torch.no_grad ()
                (neumann.Rotation "default").weight.copy_(w.neg()) |> ignore
            use rn = (neumann.Rotation "default").Rotations()
            use re = (exact.Rotation "default").Rotations()
            Expect.isLessThan (relErr rn re) 1e-8 "Cayley(−Q) by the series"
        }

        test "COFT projects each block's Q into the ball of radius eps/√blocks (written into the weight, as PEFT)" {
            let lin = torch.nn.Linear(12L, 2L, dtype = torch.float64)
            let l = new OftLayer(lin)
            let eps = 1e-2
            l.AddAdapter("default", OftConfig(Targets = [| "x" |], BlockSize = 4, Coft = true, Eps = eps))
            l.SetActiveAdapters [ "default" ]
            let w = (l.Rotation "default").weight
            do
                use _ = torch.no_grad ()
                w.copy_(torch.tensor([| 1.0; 0.0; 0.0; 0.0; 0.0; 0.0; 1e-4; 0.0; 0.0; 0.0; 0.0; 0.0; 0.0; 3.0; 4.0; 0.0; 0.0; 0.0 |], dtype = torch.float64).view(3L, 6L)) |> ignore
            use _ = l.forward (torch.randn([| 1L; 12L |], dtype = torch.float64))
            let radius = eps / sqrt 3.0
            // ‖skew(Q)‖_F = √2 ‖row‖: rows 0 and 2 are scaled to the radius, row 1 (inside) is kept
            let norms = [ for i in 0L .. 2L -> sqrt 2.0 * w.[i].norm().ToDouble() ]
            Expect.floatClose Accuracy.high norms.[0] radius "row 0 on the sphere"
            Expect.floatClose Accuracy.high norms.[2] radius "row 2 on the sphere"
            Expect.floatClose Accuracy.high (w.[1L, 0L].ToDouble()) 1e-4 "row 1 inside: unchanged"
            Expect.floatClose Accuracy.high (w.[2L, 2L].ToDouble() / w.[2L, 1L].ToDouble()) (4.0 / 3.0) "direction kept"
        }

        test "module dropout: in training ⌊p·blocks⌋ blocks are the identity, in eval none; a shared block is never dropped" {
            let lin = torch.nn.Linear(16L, 2L, dtype = torch.float64)
            let l = new OftLayer(lin)
            l.AddAdapter("default", OftConfig(Targets = [| "x" |], BlockSize = 4, ModuleDropout = 0.5))
            randomise (l.AdapterParameters "default") 9
            let rot = l.Rotation "default"
            let identities (r: torch.Tensor) =
                [ for i in 0L .. r.shape.[0] - 1L -> (use d = (r.[i] - torch.eye(4L, dtype = torch.float64)).abs().max() in d.ToDouble() = 0.0) ]
                |> List.filter id |> List.length
            l.train ()
            Expect.equal (identities (rot.Rotations())) 2 "2 of 4 blocks dropped"
            l.eval ()
            Expect.equal (identities (rot.Rotations())) 0 "none in eval"
        }

        test "PEFT's adjust_oft_parameters and the r / oft_block_size resolution" {
            for (n, v), expected in [ (192, 7), 6; (48, 32), 24; (10, 3), 2; (10, 4), 5; (7, 9), 7; (64, 32), 32; (9, 4), 3 ] do
                Expect.equal (OftConfig.Adjust(n, v)) expected (sprintf "adjust(%d, %d)" n v)
            let r (c: OftConfig) n = let struct (a, b) = c.Resolve n in a, b
            Expect.equal (r (OftConfig(BlockSize = 32)) 192) (6, 32) "block size divides"
            Expect.equal (r (OftConfig(Rank = 5, BlockSize = 0)) 192) (4, 48) "r = 5 moves to 4 (4 and 6 tie: the lower)"
            Expect.equal (r (OftConfig(BlockSize = 32)) 48) (2, 24) "a 3×4×4 patch conv"
        }

        test "several adapters rotate in turn, in the order merging applies them" {
            let lin = torch.nn.Linear(8L, 3L, dtype = torch.float64)
            let l = new OftLayer(lin)
            for a in [ "a"; "b" ] do l.AddAdapter(a, OftConfig(Targets = [| "x" |], BlockSize = 4, UseCayleyNeumann = false))
            randomise (l.AdapterParameters "a") 1
            randomise (l.AdapterParameters "b") 2
            l.SetActiveAdapters [ "a"; "b" ]
            use x = torch.randn([| 2L; 8L |], dtype = torch.float64)
            use y = l.forward x
            l.Merge()
            use ym = l.forward x
            close "merged a then b" torch.float64 ym y
        }
    ]

/// vitTiny: dim 16 (qkv 16 → 48), patch conv 3 → 16 with 4×4 kernels (48 features).
let private roundTrips : (string * TuningConfig * (string * int64[]) list) list =
    [ "OFT, COFT", OftConfig(Targets = [| "qkv"; "patch_embed.proj" |], BlockSize = 4, Coft = true, Eps = 0.5, ModulesToSave = [| "head" |]),
      [ "blocks.0.attn.qkv.oft_R.weight", [| 4L; 6L |]; "patch_embed.proj.oft_R.weight", [| 12L; 6L |] ]
      "BOFT, 2 butterfly factors", BoftConfig(Targets = [| "qkv"; "patch_embed.proj" |], BlockSize = 4, ButterflyFactor = 2),
      [ "blocks.0.attn.qkv.boft_R", [| 2L; 4L; 4L; 4L |]; "blocks.1.attn.qkv.boft_s", [| 48L; 1L |]
        "patch_embed.proj.boft_R", [| 2L; 12L; 4L; 4L |]; "patch_embed.proj.boft_s", [| 1L; 16L |] ]
      "HRA, Gram-Schmidt", HraConfig(Targets = [| "qkv"; "patch_embed.proj" |], Rank = 4, ApplyGs = true, InitWeights = false),
      [ "blocks.0.attn.qkv.hra_u", [| 16L; 4L |]; "patch_embed.proj.hra_u", [| 48L; 4L |] ]
      "HRA", HraConfig(Targets = [| "fc1" |], Rank = 2), [ "blocks.1.mlp.fc1.hra_u", [| 16L; 2L |] ] ]

/// PEFT's BOFT matrix M = M_last ⋯ M₀, Mᵢ = Pᵢ·block_diag(Cayley(0.5(Aᵢ − Aᵢᵀ)))·Pᵢᵀ, P[i, perm[i]] = 1.
let private boftMatrix (l: BoftLayer) =
    let a = (l.R "default").detach()
    let f, d, b = a.shape.[0], a.shape.[1], int a.shape.[2]
    let n = int (d * int64 b)
    let factors =
        [ for i in 0L .. f - 1L ->
              let blocks = [| for j in 0L .. d - 1L ->
                                let x = a.[i, j]
                                let s = 0.5 * (x - x.t())
                                let eye = torch.eye(int64 b, dtype = a.dtype)
                                (eye - s).matmul(torch.linalg.inv(eye + s)) |]
              let perm = BoftLayer.ButterflyPerm(n, int (d >>> int i), b / 2, int f - 1)
              let p = torch.zeros([| int64 n; int64 n |], dtype = a.dtype)
              perm |> Array.iteri (fun r c -> p.[int64 r, c] <- torch.tensor(1.0, dtype = a.dtype))
              p.matmul(torch.block_diag blocks).matmul(p.t()) ]
    factors |> List.fold (fun (m: torch.Tensor) fi -> fi.matmul m) (torch.eye(int64 n, dtype = a.dtype))

/// PEFT's HRA matrix: I·(I − 2u₀u₀ᵀ)⋯ (unit columns), or I − 2QQᵀ of its Gram-Schmidt loop.
let private hraMatrix (u: torch.Tensor) (gs: bool) =
    let n, r = u.shape.[0], u.shape.[1]
    let eye = torch.eye(n, dtype = u.dtype)
    if gs then
        let mutable cols = [ u.select(1L, 0L).view(-1L, 1L) / u.select(1L, 0L).norm() ]
        for i in 1L .. r - 1L do
            let mutable v = u.select(1L, i).view(-1L, 1L)
            for q in cols do v <- v - q.t().matmul(v) * q
            cols <- cols @ [ v / v.norm() ]
        let q = torch.cat(Array.ofList cols, 1L)
        eye - 2.0 * q.matmul(q.t())
    else
        let unit = u / u.norm(0, keepdim = true)
        Seq.fold (fun (w: torch.Tensor) i -> let ui = unit.select(1L, i).view(-1L, 1L) in w - 2.0 * w.matmul(ui).matmul(ui.t())) eye (seq { 0L .. r - 1L })

let private zooLayerTests =
    testList "BOFT and HRA layers" [
        testProp "BOFT Linear: y = (base(x·M) − b) ⊙ s + b as PEFT; fresh = base; merge = unmerged; unmerge exact" (fun (seed: int) (f64: bool) (bs: bool) (factor: byte) (c: bool) (o: byte) ->
            let dt = if f64 then torch.float64 else torch.float32
            let b = if bs then 4 else 2
            let factors = int factor % 3 + 1
            let n = int64 (b * (1 <<< (factors - 1)) * (if c then 2 else 1))
            let lin = torch.nn.Linear(n, int64 (int o % 5 + 1), dtype = dt)
            randomise (lin.parameters ()) (seed + 1)
            use g = new torch.Generator(uint64 (abs seed))
            let x = torch.randn([| 3L; 2L; n |], dtype = dt, generator = g)
            use yBase = lin.forward x
            let l = new BoftLayer(lin)
            l.AddAdapter("default", BoftConfig(Targets = [| "x" |], BlockSize = b, ButterflyFactor = factors))
            contract l x yBase true dt (fun () ->
                let m = boftMatrix l
                let s = (l.S "default").detach().squeeze(-1L)
                (lin.forward (x.matmul m) - lin.bias) * s + lin.bias) seed)

        testProp "BOFT Conv2d: W' = (M·W.view(out, in·k²)ᵀ)ᵀ ⊙ sᵀ as PEFT's merge; fresh = base; merge = unmerged" (fun (seed: int) (f64: bool) (factor: bool) (k: byte) (stride: bool) ->
            let dt = if f64 then torch.float64 else torch.float32
            let k = int64 (int k % 3 + 1)
            let factors = if factor then 2 else 1
            let cv = torch.nn.Conv2d(4L, 3L, k, stride = (if stride then 2L else 1L), padding = 1L, dtype = dt)
            randomise (cv.parameters ()) (seed + 1)
            use g = new torch.Generator(uint64 (abs seed))
            let x = torch.randn([| 2L; 4L; 5L; 5L |], dtype = dt, generator = g)
            use yBase = cv.forward x
            let l = new BoftLayer(cv)
            l.AddAdapter("default", BoftConfig(Targets = [| "x" |], BlockSize = 2, ButterflyFactor = factors))
            contract l x yBase true dt (fun () ->
                let m = boftMatrix l
                let w = cv.weight.detach()
                let w' = (m.matmul(w.view(w.shape.[0], -1L).t()).t() * (l.S "default").detach().t()).reshape(w.shape)
                torch.nn.functional.conv2d(x, w', cv.bias, cv.stride, cv.padding, cv.dilation, cv.groups)) seed)

        test "PEFT's block_butterfly_perm: the second factor interleaves half-blocks" {
            Expect.sequenceEqual (BoftLayer.ButterflyPerm(8, 2, 1, 1)) [| 0L; 2L; 1L; 3L; 4L; 6L; 5L; 7L |] "n 8, 2 blocks, r 1"
            Expect.sequenceEqual (BoftLayer.ButterflyPerm(8, 1, 2, 2)) [| 0L; 1L; 4L; 5L; 2L; 3L; 6L; 7L |] "n 8, 1 block, r 2"
            Expect.sequenceEqual (BoftLayer.ButterflyPerm(6, 3, 1, 0)) [| 0L .. 5L |] "one factor: the identity"
        }

        testProp "HRA Linear and Conv2d: W' = W·H, H = ∏(I − 2uuᵀ) as PEFT; the symmetric start is the base; merge = unmerged" (fun (seed: int) (a: byte) (b: byte) (k: byte) (f64: bool) (isConv: bool) (half: byte) ->
            let m, x, dt, w0 =
                if isConv then let c, x, dt = conv seed a b k f64 in (c :> torch.nn.Module<torch.Tensor, torch.Tensor>), x, dt, c.weight
                else let c, x, dt = linear seed (int a) (int b) f64 in (c :> torch.nn.Module<torch.Tensor, torch.Tensor>), x, dt, c.weight
            use yBase = m.forward x
            let l = new HraLayer(m)
            let n = l.Features
            let r = 2 * (int half % int (max 1L (n / 2L)) + 1)
            let r = if int64 r > n then 2 else r
            if int64 r <= n then
                l.AddAdapter("default", HraConfig(Targets = [| "x" |], Rank = r))
                contract l x yBase false dt (fun () ->
                    let h = hraMatrix ((l.U "default").detach()) false
                    let w = w0.detach()
                    let w' = w.view(w.shape.[0], -1L).matmul(h).reshape(w.shape)
                    match m with
                    | :? Conv2d as c -> torch.nn.functional.conv2d(x, w', c.bias, c.stride, c.padding, c.dilation, c.groups)
                    | _ -> torch.nn.functional.linear(x, w', (m :?> Linear).bias)) seed)

        test "HRA with Gram-Schmidt: W' = W·(I − 2QQᵀ) as PEFT's loop; merged = unmerged" {
            let lin = torch.nn.Linear(6L, 3L, dtype = torch.float64)
            let l = new HraLayer(lin)
            l.AddAdapter("default", HraConfig(Targets = [| "x" |], Rank = 3, ApplyGs = true, InitWeights = false))
            l.SetActiveAdapters [ "default" ]
            use x = torch.randn([| 4L; 6L |], dtype = torch.float64)
            use y = l.forward x
            let h = hraMatrix ((l.U "default").detach()) true
            use yr = torch.nn.functional.linear(x, lin.weight.detach().matmul(h), lin.bias)
            close "Gram-Schmidt reflection" torch.float64 y yr
            close "H orthogonal" torch.float64 (h.matmul(h.t())) (torch.eye(6L, dtype = torch.float64))
            l.Merge()
            use ym = l.forward x
            close "merged" torch.float64 ym y
        }
    ]

/// tests/fixtures/orthogonal.io.safetensors: PEFT 0.20's formulas transcribed into PyTorch
/// (make_orthogonal_fixtures.py, torch 1.13, float64), for one Linear 8 → 3 and one 2×2 Conv2d.
let private fixtureTests =
    testList "against PyTorch" [
        test "OFT, BOFT and HRA outputs equal PEFT's formulas computed by PyTorch (float64)" {
            let t = Lora.Core.IO.Safetensors.Load(fixture "orthogonal.io.safetensors")
            let linear () =
                let l = torch.nn.Linear(8L, 3L, dtype = torch.float64)
                do
                    use _ = torch.no_grad ()
                    l.weight.copy_(t.["weight"]) |> ignore
                    l.bias.copy_(t.["bias"]) |> ignore
                l
            let set (p: Parameter) (key: string) =
                use _ = torch.no_grad ()
                p.copy_(t.[key]) |> ignore
            let check name (l: TunerLayer) (key: string) =
                l.SetActiveAdapters [ "default" ]
                use y = l.forward t.["input"]
                Expect.isLessThan (relErr y t.[key]) 1e-12 $"{name} vs PyTorch"
            let oft (c: OftConfig) q key =
                let l = new OftLayer(linear ())
                l.AddAdapter("default", c)
                set (l.Rotation "default").weight q
                check key l key
                l
            oft (OftConfig(Targets = [| "x" |], BlockSize = 4)) "oft_R" "oft_neumann" |> ignore
            oft (OftConfig(Targets = [| "x" |], BlockSize = 4, UseCayleyNeumann = false)) "oft_R" "oft_exact" |> ignore
            oft (OftConfig(Targets = [| "x" |], BlockSize = 4, UseCayleyNeumann = false, BlockShare = true)) "oft_R_shared" "oft_shared_exact" |> ignore
            let coft = oft (OftConfig(Targets = [| "x" |], BlockSize = 4, Coft = true, Eps = 1e-2)) "oft_R_coft" "oft_coft"
            Expect.isLessThan (relErr (coft.Rotation "default").weight t.["oft_R_coft_projected"]) 1e-12 "COFT's projection written into the weight"
            let conv = torch.nn.Conv2d(2L, 3L, 2L, dtype = torch.float64)
            do
                use _ = torch.no_grad ()
                conv.weight.copy_(t.["conv_weight"]) |> ignore
            let lc = new OftLayer(conv)
            lc.AddAdapter("default", OftConfig(Targets = [| "x" |], BlockSize = 4))
            set (lc.Rotation "default").weight "oft_R"
            lc.SetActiveAdapters [ "default" ]
            lc.Merge()
            Expect.isLessThan (relErr conv.weight t.["oft_conv_merged"]) 1e-12 "OFT's Conv2d merge vs PEFT's"
            let bl = new BoftLayer(linear ())
            bl.AddAdapter("default", BoftConfig(Targets = [| "x" |], BlockSize = 2, ButterflyFactor = 3))
            set (bl.R "default") "boft_R"
            set (bl.S "default") "boft_s"
            check "BOFT, 3 butterfly factors" bl "boft"
            for gs, r, u, key in [ false, 4, "hra_u", "hra"; true, 3, "hra_u_gs", "hra_gs" ] do
                let h = new HraLayer(linear ())
                h.AddAdapter("default", HraConfig(Targets = [| "x" |], Rank = r, ApplyGs = gs))
                set (h.U "default") u
                check key h key
        }
    ]

let private modelTests =
    testList "models" [
        for name, config, keys in roundTrips do
          test $"{name}: save → load in PEFT's keys and config gives the same outputs; merged = unmerged; unload restores the base" {
            MethodZooTests.roundTrip config (fun saved dir ->
                for k, shape in keys do Expect.sequenceEqual saved.["base_model.model." + k].shape shape $"{k}: PEFT's key and shape"
                let json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, AdapterCheckpoint.ConfigFile))).AsObject()
                Expect.equal (PeftConfigTests.violations json) [] "PEFT's config rules hold"
                Expect.equal (json.["peft_type"].GetValue<string>()) config.Method.PeftType "peft_type")
          }
        test "a PEFT adapter_config.json as PEFT writes it loads; one without oft_block_size (before 0.14) is refused" {
            use dir = new TempDir()
            let write (text: string) = File.WriteAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile), text)
            write """{"peft_type": "OFT", "r": 0, "oft_block_size": 32, "module_dropout": 0.0, "target_modules": ["qkv"], "coft": false, "eps": 6e-05, "block_share": false, "use_cayley_neumann": true, "num_cayley_neumann_terms": 5, "init_weights": true, "bias": "none", "peft_version": "0.20.0"}"""
            let struct (c, _) = AdapterCheckpoint.ReadConfig dir.Path
            let c = c :?> OftConfig
            Expect.equal (c.Rank, c.BlockSize, c.UseCayleyNeumann, c.NumCayleyNeumannTerms) (0, 32, true, 5) "PEFT's defaults"
            write """{"peft_type": "OFT", "r": 8, "target_modules": ["qkv"]}"""
            let e = Expect.throwsC (fun () -> AdapterCheckpoint.ReadConfig dir.Path |> ignore) (fun e -> e.Message)
            Expect.stringContains e "before PEFT 0.14" "says why"
        }
        test "summary counts are the formula: blocks · b(b−1)/2 per layer (one block when shared)" {
            let count (c: TuningConfig) = (Tuner.Apply(vitTiny (), c).Summary()).Trainable
            // vitTiny: dim 16, 2 blocks; patch conv 3 → 16, 4×4
            Expect.equal (count (OftConfig(Targets = [| "qkv" |], BlockSize = 4))) (2L * 4L * 6L) "16 = 4 × 4"
            Expect.equal (count (OftConfig(Targets = [| "qkv" |], Rank = 2, BlockSize = 0))) (2L * 2L * 28L) "r = 2: blocks of 8"
            Expect.equal (count (OftConfig(Targets = [| "qkv" |], BlockSize = 4, BlockShare = true))) (2L * 6L) "one shared block"
            Expect.equal (count (OftConfig(Targets = [| "patch_embed.proj" |]))) (2L * 276L) "48 features, block 32 → 24"
            // BOFT: factors · blocks · b² + out
            Expect.equal (count (BoftConfig(Targets = [| "qkv" |], BlockSize = 4))) (2L * (4L * 16L + 48L)) "BOFT, one factor"
            Expect.equal (count (BoftConfig(Targets = [| "qkv" |], BlockSize = 4, ButterflyFactor = 2))) (2L * (2L * 4L * 16L + 48L)) "BOFT, two factors"
            Expect.equal (count (BoftConfig(Targets = [| "qkv" |], BlockSize = 0, BlockNum = 2))) (2L * (2L * 64L + 48L)) "BOFT, 2 blocks of 8"
            // HRA: features · r
            Expect.equal (count (HraConfig(Targets = [| "qkv" |], Rank = 8))) (2L * 16L * 8L) "HRA"
        }
        test "targets OFT cannot rotate are errors that say why" {
            let m = torch.nn.Sequential([| ("dw", torch.nn.Conv2d(4L, 4L, 3L, groups = 4L) :> torch.nn.Module<torch.Tensor, torch.Tensor>)
                                           ("rect", torch.nn.Conv2d(4L, 4L, struct (1L, 3L)))
                                           ("dil", torch.nn.Conv2d(4L, 4L, 3L, dilation = 2L))
                                           ("norm", torch.nn.LayerNorm([| 4L |])) |])
            let err t = Tuner.Match(m, OftConfig(Targets = [| t |])).Errors |> String.concat "; "
            Expect.stringContains (err "dw") "grouped" "depthwise conv"
            Expect.stringContains (err "rect") "square kernels" "1×3 kernel"
            Expect.stringContains (err "dil") "dilated" "dilation"
            Expect.stringContains (err "norm") "supported: Linear and Conv2d" "a norm"
            Expect.throwsT<System.ArgumentException> (fun () -> OftConfig(Targets = [| "qkv" |], Rank = 4).Validate()) "r and oft_block_size both set"
            Expect.stringContains (Tuner.Match(m, BoftConfig(Targets = [| "dw" |])).Errors |> String.concat "; ") "grouped" "BOFT: depthwise conv"
            let vit = vitTiny ()
            Expect.stringContains (Tuner.Match(vit, BoftConfig(Targets = [| "qkv" |], BlockSize = 3)).Errors |> String.concat "; ") "not divisible by boft_block_size 3" "PEFT's divisibility rule"
            Expect.stringContains (Tuner.Match(vit, BoftConfig(Targets = [| "qkv" |], BlockSize = 4, ButterflyFactor = 4)).Errors |> String.concat "; ") "2^(boft_n_butterfly_factor" "16 features: 4 · 2³ does not divide"
            Expect.stringContains (Tuner.Match(vit, HraConfig(Targets = [| "qkv" |], Rank = 17)).Errors |> String.concat "; ") "larger than its 16 input features" "HRA r > features"
        }
    ]

let private specTests =
    testList "specs" [
        test "oft parses from YAML; the grid's rank is oft_block_size, blocks is PEFT's r" {
            let cfg text rank =
                match Lora.Conversion.ToCore.parseMethod text rank with
                | Ok m -> (match Lora.Conversion.ToCore.methodOf (lazy "head") (if m.UsesRank then rank else None) m with
                           | Lora.Conversion.CoreMethod.Tune c -> c :?> OftConfig
                           | _ -> failtest "a tuning config")
                | Error e -> failtestf "%s: %A" text e
            let c = cfg "oft" (Some 8)
            Expect.equal (c.Rank, c.BlockSize, c.UseCayleyNeumann, List.ofSeq c.Targets, List.ofSeq c.ModulesToSave) (0, 8, true, [ "qkv" ], [ "head" ]) "defaults"
            let c = cfg "oft: { blocks: 4, coft: true, eps: 0.001, block_share: true, module_dropout: 0.1, cayley_neumann: false, targets: [fc1] }" None
            Expect.equal (c.Rank, c.BlockSize, c.Coft, c.Eps, c.BlockShare, c.ModuleDropout, c.UseCayleyNeumann) (4, 0, true, 0.001, true, 0.1, false) "options"
            Expect.isFalse (Lora.Dsl.YamlSpec.method "oft: { blocks: 4 }" |> function Ok m -> m.UsesRank | _ -> true) "blocks: no rank axis"
            match Lora.Conversion.ToCore.parseMethod "oft: { module_dropout: 1.5 }" (Some 4) with
            | Error e -> Expect.stringContains (String.concat "; " e) "module_dropout" "located"
            | Ok _ -> failtest "module_dropout 1.5 must fail"
            match Lora.Dsl.YamlSpec.method "oft: { alpha: 4 }" with
            | Error e -> Expect.stringContains (String.concat "; " e) "option of" "alpha is not OFT's"
            | Ok _ -> failtest "alpha is not an OFT option"
        }
        test "boft and hra parse from YAML: boft's rank is boft_block_size (blocks: boft_block_num), hra's is r" {
            let cfg text rank =
                match Lora.Conversion.ToCore.parseMethod text rank with
                | Ok m -> (match Lora.Conversion.ToCore.methodOf (lazy "head") (if m.UsesRank then rank else None) m with
                           | Lora.Conversion.CoreMethod.Tune c -> c
                           | _ -> failtest "a tuning config")
                | Error e -> failtestf "%s: %A" text e
            let b = cfg "boft: { butterfly: 2, dropout: 0.1 }" (Some 4) :?> BoftConfig
            Expect.equal (b.BlockSize, b.BlockNum, b.ButterflyFactor, b.Dropout) (4, 0, 2, 0.1) "boft"
            let b = cfg "boft: { blocks: 8 }" None :?> BoftConfig
            Expect.equal (b.BlockSize, b.BlockNum) (0, 8) "boft blocks"
            let h = cfg "hra: { apply_gs: true, targets: [fc1] }" (Some 6) :?> HraConfig
            Expect.equal (h.Rank, h.ApplyGs, List.ofSeq h.Targets) (6, true, [ "fc1" ]) "hra"
            match Lora.Conversion.ToCore.parseMethod "boft: { butterfly: 0 }" (Some 4) with
            | Error e -> Expect.stringContains (String.concat "; " e) "butterfly" "located"
            | Ok _ -> failtest "butterfly 0 must fail"
        }
        test "validate: OFT on a ResNet needs its conv targets, and then fits" {
            let run m zoo = MethodZooTests.checkOn m zoo 4
            Expect.stringContains (run Lora.Dsl.Builders.oft "resnet18") "matches no module" "qkv on a ResNet"
            Expect.equal (run (Lora.Dsl.Oft { Lora.Dsl.OftOptions.Defaults with OftTargets = [ "conv1"; "conv2" ] }) "resnet18") "" "its convs fit"
            Expect.equal (run Lora.Dsl.Builders.oft "vit_tiny_patch16_224") "" "the ViT's qkv fits"
            Expect.equal (run Lora.Dsl.Builders.boft "vit_tiny_patch16_224") "" "BOFT fits the ViT's qkv"
            Expect.equal (run Lora.Dsl.Builders.hra "vit_tiny_patch16_224") "" "HRA fits the ViT's qkv"
            Expect.stringContains (run (Lora.Dsl.Boft { Lora.Dsl.BoftOptions.Defaults with BoftTargets = [ "conv1"; "conv2" ] }) "resnet18") "not divisible" "BOFT block 4 on the 7×7 stem (147 features)"
            Expect.equal (run (Lora.Dsl.Boft { Lora.Dsl.BoftOptions.Defaults with BoftTargets = [ "layer1.0.conv1" ] }) "resnet18") "" "a 3×3 conv of 64 channels fits"
        }
        test "OFT runs hash apart from the others; a LoRA run's canonical form has none of OFT's fields" {
            let h = Lora.Dsl.Canonical.hash (MethodZooTests.tuningRun Lora.Dsl.Builders.oft)
            Expect.notEqual h (Lora.Dsl.Canonical.hash (MethodZooTests.tuningRun (Lora.Dsl.Oft { Lora.Dsl.OftOptions.Defaults with Coft = true }))) "coft hashes apart"
            Expect.notEqual h (Lora.Dsl.Canonical.hash (MethodZooTests.tuningRun Lora.Dsl.Builders.lora)) "apart from LoRA"
            let loraJson = Lora.Dsl.Canonical.json (MethodZooTests.tuningRun Lora.Dsl.Builders.lora)
            for f in [ "coft"; "block_share"; "cayley" ] do Expect.isFalse (loraJson.Contains f) $"no {f} in LoRA's form"
        }
    ]

let tests = testList "Oft" [ layerTests; zooLayerTests; fixtureTests; modelTests; specTests ]
