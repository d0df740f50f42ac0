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

/// ONNX Runtime's output for an ONNX model held in memory.
let ortForwardBytes (bytes: byte[]) (input: torch.Tensor) =
    use tmp = new TempDir()
    IO.File.WriteAllBytes(tmp.File "m.onnx", bytes)
    ortForward (tmp.File "m.onnx") input

/// Makes every LoRA B (and DoRA magnitude) non-zero so that merging changes the weights.
let perturbAdapters (m: torch.nn.Module) =
    use _ = torch.no_grad()
    for struct (name, p) in m.named_parameters() do
        if name.Contains "lora_B" then p.normal_(0.0, 0.05) |> ignore

let exportRoundTrip (name: string) (classes: int64) (targets: string[]) (method: Lora.Core.Tuning.TuningMethod) (shape: int64[]) =
    let m = new OnnxModule(OnnxGraph.Read(onnxFixture name), OnnxImportOptions(NumClasses = Nullable classes))
    let t = Lora.Core.Tuning.Tuner.Apply(m, Lora.Core.Tuning.TuningConfig(Method = method, Targets = targets, Rank = 2, ModulesToSave = [| m.Classifier |]))
    perturbAdapters m
    m.eval() |> ignore
    torch.manual_seed 11L |> ignore
    let x = torch.randn(shape)
    use _ = torch.no_grad()
    let unmerged: torch.Tensor = m.call x
    let merged = t.MergeAndUnload() :?> OnnxModule
    merged.eval() |> ignore
    let ours: torch.Tensor = merged.call x
    Expect.isLessThan (relErr ours unmerged) 1e-4 "merged = unmerged"
    let ort = ortForwardBytes (OnnxExport.ToBytes merged) x
    Expect.sequenceEqual ort.shape [| shape.[0]; classes |] "the exported head has the new class count"
    Expect.isLessThan (relErr ort ours) 1e-4 $"{name}: the exported merged model in ONNX Runtime = our forward"

/// A fixture with one node changed, as bytes.
let edited name (edit: Onnx.ModelProto -> unit) =
    let m = Onnx.ModelProto.Parser.ParseFrom(IO.File.ReadAllBytes(onnxFixture name))
    edit m
    Google.Protobuf.MessageExtensions.ToByteArray m

let importError (bytes: byte[]) =
    try
        use _ = new OnnxModule(OnnxGraph.Parse(bytes, "test.onnx"))
        failtest "expected an import error"
        ""
    with :? OnnxImportException as e -> e.Message

let exportTests =
    testList "export" [
        test "LoRA on a ResNet's convolutions, new 5-class fc: merged export runs in ONNX Runtime and equals our forward" {
            exportRoundTrip "resnet_basic_op13" 5L [| "re:layer\\d\\.0\\.conv[12]" |] Lora.Core.Tuning.TuningMethod.Lora [| 2L; 3L; 32L; 32L |]
        }
        test "DoRA on a BatchNorm ResNet (BatchNormalization nodes kept)" {
            exportRoundTrip "resnet_bottleneck_bn_op15" 3L [| "conv2" |] Lora.Core.Tuning.TuningMethod.Dora [| 2L; 3L; 32L; 32L |]
        }
        test "LoRA on a ViT's MatMul linears (opset 17: LayerNormalization), new head" {
            exportRoundTrip "vit_op17" 4L [| "in_proj"; "mlp.0" |] Lora.Core.Tuning.TuningMethod.Lora [| 2L; 3L; 32L; 32L |]
        }
        test "AdaLoRA on a ViT (opset 13)" {
            exportRoundTrip "vit_op13" 6L [| "mlp.0"; "mlp.3" |] Lora.Core.Tuning.TuningMethod.AdaLora [| 2L; 3L; 32L; 32L |]
        }
        test "resnet18_mlnet with a new head exports its preprocessing and head; ONNX Runtime agrees at 224 px" {
            use _ = torch.no_grad()
            use m = Zoo.Create("resnet18_mlnet", ModelArgs.Empty.With("num_classes", 10L)) :?> OnnxModule
            m.eval() |> ignore
            torch.manual_seed 5L |> ignore
            let x = torch.rand(1L, 3L, 224L, 224L)
            let ours: torch.Tensor = m.call x
            let ort = ortForwardBytes (OnnxExport.ToBytes m) x
            Expect.isLessThan (relErr ort ours) 1e-4 "ONNX Runtime on the export = our forward"
        }
        test "lora forward and lora export on the command line agree with ONNX Runtime; a failed export writes nothing" {
            use tmp = new TempDir()
            torch.manual_seed 2L |> ignore
            let x = torch.randn(2L, 3L, 32L, 32L)
            Lora.Core.IO.Safetensors.Save(tmp.File "in.safetensors", [ Collections.Generic.KeyValuePair("input", x) ])
            IO.File.WriteAllText(tmp.File "cfg.json", """{"num_classes": 7}""")
            let model = onnxFixture "mobilenet_v2_op14"
            // the new head's weights, so that both commands use the same ones
            do
                use m7 = new OnnxModule(OnnxGraph.Read model, OnnxImportOptions(NumClasses = Nullable 7L))
                Lora.Core.IO.StateDict.Save(m7, tmp.File "w.safetensors")
            let code, _, err = runLora [ "forward"; "--model"; model; "--input"; tmp.File "in.safetensors"; "--out"; tmp.File "out.safetensors" ]
            Expect.equal code 0 $"forward exits 0 ({err})"
            let out = Lora.Core.IO.Safetensors.Load(tmp.File "out.safetensors").["output"]
            Expect.isLessThan (relErr out (ortForward model x)) 1e-4 "lora forward = ONNX Runtime"
            let code, _, err = runLora [ "export"; "--model"; model; "--model-config"; tmp.File "cfg.json"; "--weights"; tmp.File "w.safetensors"; "--out"; tmp.File "m.onnx" ]
            Expect.equal code 0 $"export exits 0 ({err})"
            let code, _, err = runLora [ "forward"; "--model"; model; "--model-config"; tmp.File "cfg.json"; "--weights"; tmp.File "w.safetensors"; "--input"; tmp.File "in.safetensors"; "--out"; tmp.File "out7.safetensors" ]
            Expect.equal code 0 $"forward with a new head exits 0 ({err})"
            let out7 = Lora.Core.IO.Safetensors.Load(tmp.File "out7.safetensors").["output"]
            Expect.sequenceEqual out7.shape [| 2L; 7L |] "7 classes"
            Expect.isLessThan (relErr (ortForward (tmp.File "m.onnx") x) out7) 1e-4 "the export in ONNX Runtime = lora forward"
            let code, _, err = runLora [ "export"; "--model"; "unet"; "--out"; tmp.File "zoo.onnx" ]
            Expect.equal code 1 "a UNet cannot be exported"
            Expect.stringContains err "cannot export unet" "says so"
            Expect.isFalse (IO.File.Exists(tmp.File "zoo.onnx")) "no file written"
            Expect.equal (IO.Directory.GetFiles(tmp.Path).Length) 6 "no temporary file left either"
        }
    ]

let errorTests =
    testList "bad files" [
        test "a file that is not ONNX is a one-line error" {
            let e = importError [| 1uy; 2uy; 3uy; 0xffuy |]
            Expect.stringContains e "is not an ONNX model" "says what"
            Expect.isFalse (e.Contains "\n") "one line"
        }
        test "an unsupported op names the op, the node and the opset" {
            let e = importError (edited "resnet_basic_op13" (fun m -> (m.Graph.Node |> Seq.find (fun n -> n.OpType = "Relu")).OpType <- "Celu"))
            Expect.stringContains e "Celu" "the op"
            Expect.stringContains e "opset 13" "the opset"
            Expect.stringContains e "/relu/" "the node"
        }
        test "a convolution whose weight the graph computes is a dynamic-weight error" {
            let e = importError (edited "resnet_basic_op13" (fun m ->
                let convs = m.Graph.Node |> Seq.filter (fun n -> n.OpType = "Conv") |> Seq.toArray
                convs.[1].Input.[1] <- convs.[0].Output.[0]))
            Expect.stringContains e "dynamic weight" "says what"
            Expect.stringContains e "Conv" "the op"
        }
        test "lora forward on a bad file exits 1 with one line, no stack trace" {
            use tmp = new TempDir()
            IO.File.WriteAllText(tmp.File "bad.onnx", "not a model")
            Lora.Core.IO.Safetensors.Save(tmp.File "in.safetensors", [ Collections.Generic.KeyValuePair("input", torch.zeros(1L, 3L, 8L, 8L)) ])
            let code, _, err = runLora [ "forward"; "--model"; tmp.File "bad.onnx"; "--input"; tmp.File "in.safetensors"; "--out"; tmp.File "o.safetensors" ]
            Expect.equal code 1 "exit 1"
            Expect.equal (err.Trim().Split('\n').Length) 1 "one line"
            Expect.isFalse (err.Contains "   at ") "no stack trace"
        }
    ]

let tuningTests =
    testList "tuning an imported graph" [
        test "LoRA targets an imported ViT's linears by their torch names; a fresh adapter changes nothing" {
            use _ = torch.no_grad()
            use m = new OnnxModule(OnnxGraph.Read(onnxFixture "vit_op17"))
            m.eval() |> ignore
            let x = torch.randn(2L, 3L, 32L, 32L)
            let before: torch.Tensor = m.call x
            let report = Lora.Core.Tuning.Tuner.Match(m, Lora.Core.Tuning.TuningConfig(Targets = [| "self_attention.in_proj"; "out_proj" |], Rank = 2))
            Expect.isEmpty report.Errors "no problem"
            let expected =
                set [ for i in 0 .. 1 do
                        $"encoder.layers.encoder_layer_{i}.self_attention.in_proj"
                        $"encoder.layers.encoder_layer_{i}.self_attention.out_proj" ]
            Expect.equal (report.Targets |> Seq.map (fun t -> t.Path) |> Set.ofSeq) expected "the readable paths"
            let _t = Lora.Core.Tuning.Tuner.Apply(m, Lora.Core.Tuning.TuningConfig(Targets = [| "in_proj"; "out_proj" |], Rank = 2))
            m.eval() |> ignore
            let after: torch.Tensor = m.call x
            Expect.isLessThan (relErr after before) 1e-6 "B = 0: the same output"
            Expect.isTrue (m.named_parameters() |> Seq.exists (fun struct (n, _) -> n = "encoder.layers.encoder_layer_0.self_attention.in_proj.lora_A.default.weight")) "PEFT-style parameter names"
        }
        test "full fine-tuning trains the class token and position embedding too" {
            use m = new OnnxModule(OnnxGraph.Read(onnxFixture "vit_op13"))
            let names = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
            Expect.isTrue (names.Contains "class_token" && names.Contains "encoder.pos_embedding") $"{names}"
        }
    ]

let tests =
    testList "Onnx" [
        mlnetTests
        exportTests
        errorTests
        tuningTests
        testList "import equals ONNX Runtime" [
            for name, shape in fixtures -> test name { importAndCompare name shape }
        ]
    ]
