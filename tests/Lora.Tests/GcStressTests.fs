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
                        while not (Volatile.Read &stop) do
                            GC.Collect()
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

let tests =
    testList "GcStress" [
        ptest "raw temporaries: x.mul(v.ToScalar()) under forced GC (measurement, expected to fail now and then)" {
            let wrong = rawTemporaries 200000
            Expect.equal wrong 0 "wrong results out of 200000"
        }
        test "held scalars: x.mul(s) with the Scalar in a use binding stays exact under forced GC" {
            Expect.equal (heldScalars 50000) 0 "wrong results out of 50000"
        }
        // Measurement, not in the suite: still 1-5 native errors in 3000 passes after this project
        // holds all of its own Scalars, because TorchSharp 0.107's Tensor.add(Scalar)/sub create the
        // `alpha = 1` Scalar internally (THSTensor_add_scalar reads a freed Scalar: "toFloat" error).
        ptest "tuned layers (LoRA, DoRA, AdaLoRA, conv DoRA): forward and merged weight exact under forced GC" {
            let layers = tunedLayers ()
            use x = torch.randn(5L, 8L)
            use img = torch.randn(2L, 3L, 6L, 6L)
            let input (l: TunerLayer) = if l :? LoraConv2d then img else x
            use _ = torch.no_grad ()
            let expected = [ for l in layers -> l.forward(input l).data<float32>().ToArray(), l.DeltaWeight("default").data<float32>().ToArray() ]
            let wrong =
                underGcPressure 3000 (fun _ ->
                    List.forall2 (fun (l: TunerLayer) (y, d) ->
                        use got = l.forward(input l)
                        use delta = l.DeltaWeight "default"
                        exactly y got && exactly d delta) layers expected)
            Expect.equal wrong 0 "wrong results out of 3000 passes"
        }
    ]
