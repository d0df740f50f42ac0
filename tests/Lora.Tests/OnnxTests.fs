/// ONNX import and export against ONNX Runtime (tests/fixtures/onnx, made by scripts/make_onnx_fixtures.py).
module Lora.Tests.OnnxTests

open System
open Expecto
open TorchSharp
open Microsoft.ML.OnnxRuntime
open Lora.Core.Onnx
open Lora.Core.Models
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

/// ML.NET's own pipeline in ONNX Runtime: ResNetPreprocess.onnx on 0-255 pixels, then ResNet18.onnx.
let mlnetReference (x01: torch.Tensor) =
    use pixels = x01 * 255.0f
    let prep = ortForward MlNetResNet18.PreprocessPath pixels
    ortForward MlNetResNet18.ModelPath prep

let mlnetTests =
    testList "resnet18_mlnet" [
        test "equals ML.NET's preprocessing + ResNet-18 in ONNX Runtime at 224 px" {
            use _ = torch.no_grad()
            use m = Lora.Core.Models.Zoo.Create("resnet18_mlnet")
            m.eval() |> ignore
            torch.manual_seed 3L |> ignore
            let x = torch.rand(1L, 3L, 224L, 224L)
            let ours: torch.Tensor = m.call x
            let ort = mlnetReference x
            Expect.sequenceEqual ours.shape [| 1L; 512L; 1L; 1L |] "features [1, 512, 1, 1]"
            Expect.isLessThan (relErr ours ort) 1e-4 "forward = ONNX Runtime's within 1e-4 of its largest magnitude"
        }
        test "has torchvision's resnet18 keys; num_classes appends fc after global pooling, any input size" {
            use _ = torch.no_grad()
            use m = Lora.Core.Models.Zoo.Create("resnet18_mlnet", Lora.Core.Models.ModelArgs.Empty.With("num_classes", 10L))
            m.eval() |> ignore
            let expected = (IO.File.ReadAllText(fixture "onnx/resnet18_torchvision_keys.txt")).Split([| ' '; '\n' |], StringSplitOptions.RemoveEmptyEntries) |> Set.ofArray
            let keys = m.state_dict().Keys |> Set.ofSeq
            Expect.equal (Set.toList (expected - keys)) [] "no torchvision key is missing"
            // ML.NET's stage 4 has a third block (layer4.2); fc is the new head
            let extra = keys - expected |> Set.toList
            Expect.equal (extra |> List.filter (fun k -> not (k.StartsWith "fc." || k.StartsWith "layer4.2."))) [] "no other key besides torchvision's"
            Expect.equal extra.Length (2 + 2 + 2 * 5) "fc (2) and layer4.2: conv1, conv2 (2), bn1, bn2 (10)"
            Expect.equal (Lora.Core.Models.Zoo.Classifier m) "fc" "the classifier is fc"
            let y: torch.Tensor = m.call (torch.rand(2L, 1L, 64L, 96L))
            Expect.sequenceEqual y.shape [| 2L; 10L |] "grey 64×96 images → [2, 10] (CNTK's asymmetric pads need multiples of 32)"
        }
    ]

let tests =
    testList "Onnx" [
        mlnetTests
        testList "import equals ONNX Runtime" [
            for name, shape in fixtures -> test name { importAndCompare name shape }
        ]
    ]
