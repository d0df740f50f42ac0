/// PEFT's add_weighted_adapter ('cat', 'linear', 'svd' with its clamp) against float64 references
/// of PEFT's formulas, on a Linear and a Conv2d, and what it refuses.
module Lora.Tests.WeightedAdapterTests

open Expecto
open TorchSharp
open TorchSharp.Modules
open Lora.Core.Tuning
open Lora.Tests.Generators

type private T = torch.Tensor

/// A Linear `fc` and a Conv2d `conv` (k×k), the two layer kinds LoRA combines, in float64 (the
/// adapters follow), so that the references are met to 1e-9.
type private Two(inF: int64, outF: int64, cin: int64, cout: int64, k: int64) as this =
    inherit torch.nn.Module<T, T>("Two")
    let mutable fc: torch.nn.Module<T, T> = torch.nn.Linear(inF, outF, dtype = torch.float64)
    let mutable conv: torch.nn.Module<T, T> = torch.nn.Conv2d(cin, cout, k, dtype = torch.float64)
    let mutable head: torch.nn.Module<T, T> = torch.nn.Linear(outF, 2L, dtype = torch.float64)
    do this.RegisterComponents()
    override _.forward x = ignore (conv, head); fc.forward x

let private randomise (ps: Parameter seq) (seed: int) =
    use g = new torch.Generator(uint64 (abs seed))
    use _ = torch.no_grad ()
    for p in ps do
        use r = torch.randn(p.shape, dtype = p.dtype, generator = g)
        p.copy_(r * 0.3) |> ignore

let private f64 (t: T) = t.detach().to_type(torch.float64)

/// ‖a − b‖ / (1 + ‖b‖) (Frobenius).
let private rel (a: T) (b: T) = (a - b).norm().ToDouble() / (1.0 + b.norm().ToDouble())

let private lora (l: TunerLayer) = box l :?> ILoraLayer

let private asMatrix (t: T) = (f64 t).reshape(t.shape.[0], -1)

/// Bᵢ·Aᵢ as the out × (in·kh·kw) matrix of the layer.
let private product (l: TunerLayer) (a: string) =
    let x = lora l
    (asMatrix (x.WeightB a)).matmul(asMatrix (x.WeightA a))

/// A model with two LoRA adapters "a" (rank r1, alpha α1) and "b" on fc and conv, randomised.
let private twoAdapters (seed: int) (sizes: int) (r1: int) (r2: int) (al1: int) (al2: int) (equalRanks: bool) =
    let s = abs sizes
    let inF, outF = int64 (s % 7 + 3), int64 (s / 7 % 7 + 3)
    let cin, cout, k = int64 (s / 49 % 3 + 1), int64 (s / 147 % 4 + 2), (if s / 588 % 2 = 0 then 1L else 3L)
    let most = min (min inF outF) (min (cin * k * k) cout) |> int
    let r1 = abs r1 % most + 1
    let r2 = if equalRanks then r1 else abs r2 % most + 1
    let m = new Two(inF, outF, cin, cout, k)
    let t = Tuner.Apply(m, LoraConfig(Targets = [| "fc"; "conv" |], Rank = r1, Alpha = float (abs al1 % 8 + 1)), "a")
    Tuner.Apply(m, LoraConfig(Targets = [| "fc"; "conv" |], Rank = r2, Alpha = float (abs al2 % 8 + 1), UseRsLora = (seed % 2 = 0)), "b") |> ignore
    for struct (_, l) in t.Layers do
        randomise (l.AdapterParameters "a") seed
        randomise (l.AdapterParameters "b") (seed + 1)
    m, t, most

let private weight (i: int) = float (i % 21) / 10.0 - 1.0   // −1 … 1

let private throwsMsg (name: string) (f: unit -> unit) =
    try
        f ()
        failtest $"{name}: expected an ArgumentException"
    with :? System.ArgumentException as e -> e.Message

let private properties =
    testList "properties (float64 references of PEFT's formulas)" [
        testProp "cat: ΔW = Σ wᵢ·ΔWᵢ exactly, rank r₁ + r₂" (fun (seed: int) (sizes: int) (r1: int) (r2: int) (al1: int) (al2: int) (w1: int) (w2: int) ->
            let m, t, _ = twoAdapters seed sizes r1 r2 al1 al2 false
            use _ = m
            let w1, w2 = weight w1, weight w2
            t.AddWeightedAdapter([| "a"; "b" |], [| w1; w2 |], "mix", Combination.Cat)
            for struct (path, l) in t.Layers do
                let x = lora l
                Expect.equal (x.Options "mix").Rank ((x.Options "a").Rank + (x.Options "b").Rank) $"{path}: rank"
                Expect.equal (x.Scaling "mix") 1.0 "scaling 1"
                use expected = product l "a" * (w1 * x.Scaling "a") + product l "b" * (w2 * x.Scaling "b")
                use actual = asMatrix (l.DeltaWeight "mix")
                Expect.isLessThan (rel actual expected) 1e-9 $"{path}: Σ wᵢ ΔWᵢ")
        testProp "linear (equal ranks): A = Σ √(wᵢ·sᵢ)·Aᵢ, B = Σ √(wᵢ·sᵢ)·Bᵢ; one adapter gives w·ΔW" (fun (seed: int) (sizes: int) (r: int) (al1: int) (al2: int) (w1: int) (w2: int) ->
            let m, t, _ = twoAdapters seed sizes r r al1 al2 true
            use _ = m
            let w1, w2 = abs (weight w1), abs (weight w2)
            t.AddWeightedAdapter([| "a"; "b" |], [| w1; w2 |], "mix", Combination.Linear)
            t.AddWeightedAdapter([| "b" |], [| w2 |], "solo", Combination.Svd)   // one adapter: 'linear', as PEFT
            for struct (path, l) in t.Layers do
                let x = lora l
                let part (a: string) (w: float) (f: string -> Parameter) = (asMatrix (f a)) * sqrt (w * x.Scaling a)
                use a = part "a" w1 x.WeightA + part "b" w2 x.WeightA
                use b = part "a" w1 x.WeightB + part "b" w2 x.WeightB
                use actual = asMatrix (l.DeltaWeight "mix")
                Expect.isLessThan (rel actual (b.matmul a)) 1e-9 $"{path}: PEFT's linear"
                use solo = asMatrix (l.DeltaWeight "solo")
                use wDelta = asMatrix (l.DeltaWeight "b") * w2
                Expect.isLessThan (rel solo wDelta) 1e-9 $"{path}: one adapter = w·ΔW")
        testProp "svd: BA is the best rank-k approximation of Σ wᵢ·sᵢ·ΔWᵢ (Eckart–Young error; exact when k covers r₁ + r₂)" (fun (seed: int) (sizes: int) (r1: int) (r2: int) (al1: int) (al2: int) (w1: int) (w2: int) (kk: int) ->
            let m, t, most = twoAdapters seed sizes r1 r2 al1 al2 false
            use _ = m
            let w1, w2 = weight w1, weight w2
            let k = abs kk % most + 1
            t.AddWeightedAdapter([| "a"; "b" |], [| w1; w2 |], "mix", Combination.Svd, svdRank = k)
            for struct (path, l) in t.Layers do
                let x = lora l
                Expect.equal (x.Options "mix").Rank k $"{path}: rank k"
                // PEFT: Σ wᵢ·sᵢ·get_delta_weight(i), and get_delta_weight already holds sᵢ
                use target = product l "a" * (w1 * x.Scaling "a" * x.Scaling "a") + product l "b" * (w2 * x.Scaling "b" * x.Scaling "b")
                use actual = asMatrix (l.DeltaWeight "mix")
                // σ² from the eigenvalues of M·Mᵀ: an independent route to the optimal error Σ_{j>k} σⱼ²
                use eig = torch.linalg.eigvalsh(target.matmul(target.t()))
                let sigma2 = eig.data<float>().ToArray() |> Array.map (max 0.0) |> Array.sortDescending
                let optimal = sigma2 |> Array.skip (min k sigma2.Length) |> Array.sum
                let err = (target - actual).square().sum().ToDouble()
                let scale = 1e-9 * (1.0 + Array.sum sigma2)
                Expect.isLessThan (abs (err - optimal)) scale $"{path}: error {err} vs optimal {optimal}"
                if k >= (x.Options "a").Rank + (x.Options "b").Rank then
                    Expect.isLessThan (rel actual target) 1e-9 $"{path}: exact at full rank")
        testProp "svd clamp q: both factors are the unclamped ones clamped to ± their q-quantile" (fun (seed: int) (sizes: int) (r1: int) (r2: int) (w1: int) (q: byte) ->
            let m, t, _ = twoAdapters seed sizes r1 r2 3 5 false
            use _ = m
            let q = float q / 255.0
            t.AddWeightedAdapter([| "a"; "b" |], [| weight w1; 0.5 |], "free", Combination.Svd)
            t.AddWeightedAdapter([| "a"; "b" |], [| weight w1; 0.5 |], "clamped", Combination.Svd, svdClamp = q)
            for struct (path, l) in t.Layers do
                let x = lora l
                use all = torch.cat([| (f64 (x.WeightB "free")).flatten(); (f64 (x.WeightA "free")).flatten() |])
                let sorted = all.data<float>().ToArray() |> Array.sort
                // torch.quantile's linear interpolation
                let pos = q * float (sorted.Length - 1)
                let lo = int (floor pos)
                let hi = sorted.[lo] + (pos - float lo) * (sorted.[min (lo + 1) (sorted.Length - 1)] - sorted.[lo])
                let clampRef (p: Parameter) = (f64 p).clamp(torch.tensor(-hi, torch.float64), torch.tensor(hi, torch.float64))
                Expect.isLessThan (rel (f64 (x.WeightA "clamped")) (clampRef (x.WeightA "free"))) 1e-9 $"{path}: A clamped"
                Expect.isLessThan (rel (f64 (x.WeightB "clamped")) (clampRef (x.WeightB "free"))) 1e-9 $"{path}: B clamped")
    ]

let private behaviour =
    testList "behaviour" [
        test "the combined adapter is used once active; modules to save come from the adapter named" {
            let m, t, _ = twoAdapters 5 100 2 3 4 6 false
            use _ = m
            m.eval ()
            let t2 = Tuner.Apply(m, LoraConfig(Targets = [| "fc" |], Rank = 1, ModulesToSave = [| "head" |]), "h")
            t2.SetActiveAdapter "h"
            for p in t2.TrainableParameters() do randomise [ p ] 9
            t.AddWeightedAdapter([| "a"; "h" |], [| 0.5; 1.0 |], "mix", Combination.Cat, modulesToSaveFrom = "h")
            Expect.sequenceEqual t.Configs.["mix"].ModulesToSave [| "head" |] "config names the head"
            let struct (_, w) = t.SavedModules |> Seq.exactlyOne
            use hw = w.Copy("h").parameters() |> Seq.head |> f64
            use mw = w.Copy("mix").parameters() |> Seq.head |> f64
            Expect.equal (rel mw hw) 0.0 "the head is h's trained copy"
            t.SetActiveAdapter "mix"
            let trainable = m.named_parameters() |> Seq.filter (fun struct (_, p) -> p.requires_grad) |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq
            Expect.all trainable (fun n -> n.Contains ".mix") "only the combined adapter trains"
        }
        test "AdaptersDisabledScope: the base output inside, the adapter's after (PEFT's disable_adapter context)" {
            let m, t, _ = twoAdapters 3 996 1 2 4 4 false
            use _ = m
            m.eval ()
            use x = torch.randn([| 2L; 5L |], dtype = torch.float64, generator = new torch.Generator(5UL))
            use y = m.forward x
            using (t.AdaptersDisabledScope()) (fun _ ->
                t.DisableAdapters()   // nested disabling inside the scope is undone by it too
                use yb = m.forward x
                t.EnableAdapters()
                t.DisableAdapters()
                Expect.isGreaterThan (rel y yb) 1e-6 "disabled: another output")
            Expect.isFalse t.AdaptersDisabled "enabled again"
            use y2 = m.forward x
            Expect.equal (rel y2 y) 0.0 "the adapter's output again"
            t.DisableAdapters()
            using (t.AdaptersDisabledScope()) ignore
            Expect.isTrue t.AdaptersDisabled "disabled before: disabled after"
        }
        test "refused with a clear message" {
            let m, t, _ = twoAdapters 7 996 1 2 4 4 false   // fc 5→5, conv 3→4 3×3: ranks 2 and 3
            use _ = m
            Tuner.Apply(m, LoraConfig(Targets = [| "fc" |], Rank = 1, UseDora = true), "dora") |> ignore
            let cases =
                [ "unknown adapter", (fun () -> t.AddWeightedAdapter([| "a"; "zz" |], [| 1.0; 1.0 |], "x")), "no adapter named 'zz'"
                  "weights count", (fun () -> t.AddWeightedAdapter([| "a"; "b" |], [| 1.0 |], "x")), "one weight per adapter"
                  "existing name", (fun () -> t.AddWeightedAdapter([| "a"; "b" |], [| 1.0; 1.0 |], "b")), "already has an adapter named 'b'"
                  "DoRA", (fun () -> t.AddWeightedAdapter([| "a"; "dora" |], [| 1.0; 1.0 |], "x")), "DoRA adapters cannot be combined"
                  "linear, different ranks", (fun () -> t.AddWeightedAdapter([| "a"; "b" |], [| 1.0; 1.0 |], "x", Combination.Linear)), "needs the same rank"
                  "linear, negative weight", (fun () -> t.AddWeightedAdapter([| "a" |], [| -1.0 |], "x", Combination.Linear)), "must not be negative"
                  "svd rank too large", (fun () -> t.AddWeightedAdapter([| "a"; "b" |], [| 1.0; 1.0 |], "x", Combination.Svd, svdRank = 99)), "svd rank 99 is larger"
                  "svd rank with cat", (fun () -> t.AddWeightedAdapter([| "a"; "b" |], [| 1.0; 1.0 |], "x", Combination.Cat, svdRank = 2)), "only with the 'svd' combination"
                  "clamp out of range", (fun () -> t.AddWeightedAdapter([| "a"; "b" |], [| 1.0; 1.0 |], "x", Combination.Svd, svdClamp = 1.5)), "a quantile in [0, 1]"
                  "not finite", (fun () -> t.AddWeightedAdapter([| "a"; "b" |], [| nan; 1.0 |], "x")), "finite" ]
            for name, f, expected in cases do
                Expect.stringContains (throwsMsg name f) expected name
            Expect.isFalse (t.Configs.ContainsKey "x") "nothing was added"
            let m2 = new Two(4L, 4L, 2L, 3L, 1L)
            let ada = Tuner.Apply(m2, AdaLoraConfig(Targets = [| "fc" |], InitRank = 3, TargetRank = 2), "ada")
            Tuner.Apply(m2, LoraConfig(Targets = [| "conv" |], Rank = 1), "l") |> ignore
            Expect.stringContains (throwsMsg "AdaLoRA" (fun () -> ada.AddWeightedAdapter([| "l"; "ada" |], [| 1.0; 1.0 |], "x"))) "AdaLoRA adapters cannot be combined" "AdaLoRA"
        }
    ]

let tests = testList "WeightedAdapter" [ properties; behaviour ]
