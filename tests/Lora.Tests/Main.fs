module Lora.Tests.Main

open Expecto
open Expecto.Impl
open TorchSharp

let smoke =
    testList "smoke" [
        test "torch loads and autograd runs" {
            let a = torch.randn(3L, 4L, requires_grad = true)
            let l = (a * a).sum()
            l.backward()
            Expect.isTrue (a.grad.allclose(a * 2.0)) "d(a²)/da = 2a"
        }
    ]

let all =
    testList "Lora" [
        smoke
        SafetensorsTests.tests
        TuningTests.tests
        TuningCheckpointTests.tests
        WeightedAdapterTests.tests
        MethodZooTests.tests
        VisionMethodTests.tests
        OftTests.tests
        PeftConfigTests.tests
        ZooTests.tests
        ZooTests.dslKnowsTheZoo
        ResNetTests.tests
        ZooExportTests.tests
        DataTests.tests
        TrainingTests.tests
        RecipeTests.tests
        DslTests.tests
        GridAxesTests.tests
        RunnerTests.tests
        ResultsTests.tests
        ParityTests.tests
        EndToEndTests.tests
        SlurmTests.tests
        CliTests.tests
        CliAdapterTests.tests
        GcStressTests.tests
        ReliabilityTests.tests
        HostileInputTests.tests
        BenchTests.tests
        MixedPrecisionTests.tests
        ConversionTests.tests
        OnnxTests.tests
        RunCardTests.tests
        LoraOptionsTests.tests
        LocatedErrorTests.tests
        CombinationSpecTests.tests
        AdaptersCommandTests.tests
    ]

[<EntryPoint>]
let main argv =
    // Before any tensor: c10's log level (see NativeWorkarounds).
    Lora.Core.Training.NativeWorkarounds.Apply()
    // CI reads the plain closing line 'N passed, N failed' alone on a line.
    let mutable counts = None
    let printer =
        { TestPrinters.defaultPrinter with
            summary = fun cfg s ->
                async {
                    do! TestPrinters.defaultPrinter.summary cfg s
                    counts <- Some(s.passed.Length, s.failed.Length + s.errored.Length, s.ignored.Length) } }
    let code = runTestsWithCLIArgs [ CLIArguments.Printer printer ] argv all
    match counts with
    | Some(p, f, i) -> printfn "\n%d passed, %d failed, %d skipped" p f i
    | None -> ()
    code
