/// TorchSharp turns a number in a tensor op (`x * 0.5`, `x.mul(scaling)`) into a temporary Scalar
/// whose only use is its native handle; the garbage collector may finalize (free) it on another
/// thread while the native call still reads it. These tests force collections on a second thread
/// while tensor code runs and compare every result with the exact one.
module Lora.Tests.GcStressTests

open System
open System.Threading
open Expecto
open TorchSharp
open Lora.Core.Tuning

type Tensor = torch.Tensor

/// Runs `f i` for i in 0 .. n-1 while another thread collects garbage and runs finalizers without
/// pause; returns how many calls returned false or threw (a freed Scalar read by native code gives
/// a wrong value or a native error).
let underGcPressure (n: int) (f: int -> bool) =
    let mutable stop = false
    let gc = Thread((fun () ->
                        // generation 0 only: the temporaries at stake die young, and a full collection
                        // without pause would stall every other test running in parallel
                        while not (Volatile.Read &stop) do
                            GC.Collect(0, GCCollectionMode.Forced, true)
                            GC.WaitForPendingFinalizers()), IsBackground = true)
    gc.Start()
    let mutable wrong = 0
    try
        for i in 0 .. n - 1 do
            let ok = try f i with :? Runtime.InteropServices.ExternalException -> false
            if not ok then wrong <- wrong + 1
    finally
        Volatile.Write(&stop, true)
        gc.Join()
    wrong

let exactly (expected: float32[]) (t: Tensor) = t.data<float32>().ToArray() = expected

/// The raw pattern: a fresh temporary Scalar per call. Not part of the suite (it is expected to go
/// wrong now and then); run with --filter-test-case "raw temporaries" to measure.
let rawTemporaries n =
    use x = torch.ones(8L)
    underGcPressure n (fun i ->
        let v = float (i % 1000) + 0.25
        use y = x.mul(v.ToScalar())
        exactly (Array.create 8 (float32 v)) y)

let heldScalars n =
    use x = torch.ones(8L)
    underGcPressure n (fun i ->
        let v = float (i % 1000) + 0.25
        use s = v.ToScalar()
        use y = x.mul(s)
        exactly (Array.create 8 (float32 v)) y)

/// LoRA, DoRA, AdaLoRA (Linear) and LoRA (Conv2d) layers with every adapter parameter non-zero.
let tunedLayers () =
    torch.manual_seed 5L |> ignore
    let lora = new LoraLinear(torch.nn.Linear(8L, 6L))
    lora.AddAdapter("default", LoraOptions(4, 8.0))
    let dora = new LoraLinear(torch.nn.Linear(8L, 6L))
    dora.AddAdapter("default", LoraOptions(4, 8.0, UseDora = true))
    let ada = new AdaLoraLinear(torch.nn.Linear(8L, 6L))
    ada.AddAdapter("default", 4, 8.0, 0.0)
    let conv = new LoraConv2d(torch.nn.Conv2d(3L, 4L, 3L, padding = 1L))
    conv.AddAdapter("default", LoraOptions(2, 4.0, UseDora = true))
    let layers: TunerLayer list = [ lora; dora; ada; conv ]
    use _ = torch.no_grad ()
    for l in layers do
        for p in l.AdapterParameters "default" do p.normal_(0.0, 0.5) |> ignore
    for l in layers do l.eval () |> ignore
    layers

/// A 1→8→C conv stack (3×3, 32×32, tanh between: smooth, so fp32 and fp64 take the same branch)
/// in float64 and a float32 copy; returns the largest relative error of the fp32 weight gradients
/// against the fp64 ones over the two convolutions.
let convGradientError (seed: int) =
    use _ = torch.NewDisposeScope()
    torch.manual_seed (int64 seed) |> ignore
    let rng = Random seed
    let classes = [| 1L; 4L; 8L |].[rng.Next 3]
    let batch = int64 (2 + rng.Next 15)
    let c1 = torch.nn.Conv2d(1L, 8L, 3L, padding = 1L, dtype = torch.ScalarType.Float64)
    let c2 = torch.nn.Conv2d(8L, classes, 3L, padding = 1L, dtype = torch.ScalarType.Float64)
    let x = torch.randn(batch, 1L, 32L, 32L, dtype = torch.ScalarType.Float64)
    let target = torch.randn(batch, classes, 32L, 32L, dtype = torch.ScalarType.Float64)
    let grads (dtype: torch.ScalarType) =
        let w1 = c1.weight.detach().to_type(dtype).requires_grad_(true)
        let w2 = c2.weight.detach().to_type(dtype).requires_grad_(true)
        let h = torch.nn.functional.conv2d(x.to_type dtype, w1, c1.bias.detach().to_type dtype, padding = [| 1L; 1L |]).tanh()
        let y = torch.nn.functional.conv2d(h, w2, c2.bias.detach().to_type dtype, padding = [| 1L; 1L |])
        use loss = (y * target.to_type dtype).sum()
        loss.backward()
        [ w1.grad.to_type torch.ScalarType.Float64; w2.grad.to_type torch.ScalarType.Float64 ]
    let g64 = grads torch.ScalarType.Float64
    let g32 = grads torch.ScalarType.Float32
    List.map2 (fun (a: Tensor) (b: Tensor) -> ((a - b).abs().max().item<float>()) / (b.abs().max().item<float>() + 1e-12)) g32 g64
    |> List.max

[<System.Runtime.InteropServices.DllImport("libc")>]
extern nativeint getenv(string name)

// Sequenced: Expecto runs these after the parallel tests, one at a time, so the forced collections
// do not land on other tests' own temporaries (test code is not held to the lifetime rules).
let tests =
    testSequenced <| testList "GcStress" [
        test "NativeWorkarounds leaves oneDNN's instruction set to oneDNN (or to a user's ONEDNN_MAX_CPU_ISA)" {
            Lora.Core.Training.NativeWorkarounds.Apply()
            if OperatingSystem.IsLinux() then
                let native = Runtime.InteropServices.Marshal.PtrToStringAnsi(getenv "ONEDNN_MAX_CPU_ISA")
                let user = Environment.GetEnvironmentVariable "ONEDNN_MAX_CPU_ISA"
                // .NET's copy of the environment is the one the process started with; setenv would not change it
                Expect.equal native user "the C environment holds the user's value, or none"
        }
        // Issue 17.9: the gradients the old SSE4.1 cap was first set against, fp32 against fp64, at the
        // instruction set this process runs (oneDNN's own choice unless ONEDNN_MAX_CPU_ISA is set).
        test "conv weight gradients: fp32 equals fp64 at this process's oneDNN ISA (200 trials, batch 2-16)" {
            let isa = Environment.GetEnvironmentVariable "ONEDNN_MAX_CPU_ISA"
            let errors = [ for s in 0 .. 199 -> s, convGradientError s ]
            let worst, e = errors |> List.maxBy snd
            Expect.isLessThan e 1e-3 $"largest relative gradient error {e:g3} (trial {worst}; ONEDNN_MAX_CPU_ISA={isa})"
            Expect.isTrue (errors |> List.forall (fun (_, e) -> Double.IsFinite e)) "no NaN gradient"
        }
        test "conv weight gradients under forced GC: fp32 equals fp64 in every trial" {
            let wrong = underGcPressure 100 (fun i -> convGradientError (1000 + i) < 1e-3)
            Expect.equal wrong 0 "wrong gradients out of 100"
        }
        ptest "raw temporaries: x.mul(v.ToScalar()) under forced GC (measurement, expected to fail now and then)" {
            let wrong = rawTemporaries 200000
            Expect.equal wrong 0 "wrong results out of 200000"
        }
        test "held scalars: x.mul(s) with the Scalar in a use binding stays exact under forced GC" {
            Expect.equal (heldScalars 50000) 0 "wrong results out of 50000"
        }
        // TorchSharp 0.107's Tensor.add(Tensor)/add(Scalar) (and `+`) create their `alpha = 1` Scalar
        // internally; the layers add through HeldScalars.Plus, which passes a held one.
        test "tuned layers (LoRA, DoRA, AdaLoRA, conv DoRA): forward and merged weight exact under forced GC" {
            let layers = tunedLayers ()
            use x = torch.randn(5L, 8L)
            use img = torch.randn(2L, 3L, 6L, 6L)
            let input (l: TunerLayer) = if l :? LoraConv2d then img else x
            use _ = torch.no_grad ()
            let expected = [ for l in layers -> l.forward(input l).data<float32>().ToArray(), l.DeltaWeight("default").data<float32>().ToArray() ]
            // the layers' callers (trainer, evaluator, predictor, merge) run them inside a dispose
            // scope, which holds every intermediate tensor until the scope ends
            let wrong =
                underGcPressure 3000 (fun _ ->
                    use _ = torch.NewDisposeScope()
                    List.forall2 (fun (l: TunerLayer) (y, d) ->
                        use got = l.forward(input l)
                        use delta = l.DeltaWeight "default"
                        exactly y got && exactly d delta) layers expected)
            Expect.equal wrong 0 "wrong results out of 3000 passes"
        }
    ]
