/// ONNX import and export against ONNX Runtime (tests/fixtures/onnx, made by scripts/make_onnx_fixtures.py).
module Lora.Tests.OnnxTests

open System
open Expecto
open TorchSharp
open Microsoft.ML.OnnxRuntime
open Lora.Core.Onnx
open Lora.Tests.Generators

let onnxFixture name = fixture (IO.Path.Combine("onnx", name + ".onnx"))

/// ONNX Runtime's output for one float input.
let ortForward (path: string) (input: torch.Tensor) =
    use session = new InferenceSession(path)
    let name = session.InputMetadata.Keys |> Seq.head
    let data = input.contiguous().data<float32>().ToArray()
    use value = OrtValue.CreateTensorValueFromMemory(data, input.shape)
    use results = session.Run(new RunOptions(), [| name |], [| value |], [| session.OutputMetadata.Keys |> Seq.head |])
    let out = results.[0]
    let shape = out.GetTensorTypeAndShape().Shape
    let values: float32[] = out.GetTensorDataAsSpan<float32>().ToArray()
    torch.tensor(values, dimensions = ReadOnlySpan<int64>(shape))

/// |a - b| relative to b's largest magnitude.
let relErr (a: torch.Tensor) (b: torch.Tensor) =
    let scale = max (b.abs().max().item<float32>() |> float) 1e-12
    ((a - b).abs().max().item<float32>() |> float) / scale

let importAndCompare name (shape: int64[]) =
    use _ = torch.no_grad()
    let path = onnxFixture name
    use m = new OnnxModule(OnnxGraph.Read path)
    m.eval() |> ignore
    torch.manual_seed 7L |> ignore
    let x = torch.randn(shape)
    let ours: torch.Tensor = m.call x
    let ort = ortForward path x
    Expect.sequenceEqual ours.shape ort.shape "output shape = ONNX Runtime's"
    Expect.isLessThan (relErr ours ort) 1e-4 $"{name}: forward = ONNX Runtime's within 1e-4 of its largest magnitude"

let fixtures =
    [ "resnet_basic_op13", [| 2L; 3L; 32L; 32L |]
      "resnet_bottleneck_bn_op15", [| 2L; 3L; 40L; 36L |]
      "mobilenet_v2_op14", [| 2L; 3L; 32L; 32L |]
      "efficientnet_op16", [| 2L; 3L; 48L; 48L |]
      "vit_op13", [| 3L; 3L; 32L; 32L |]
      "vit_op17", [| 1L; 3L; 32L; 32L |] ]

let tests =
    testList "Onnx" [
        testList "import equals ONNX Runtime" [
            for name, shape in fixtures -> test name { importAndCompare name shape }
        ]
    ]
