module Lora.Tests.ZooTests

open System
open System.IO
open Expecto
open TorchSharp
open Lora.Core.Models

/// The tensor names in a safetensors file, read from its JSON header (independent of the loader under test).
let headerKeys (path: string) =
    use f = File.OpenRead path
    let lenBytes = Array.zeroCreate<byte> 8
    f.ReadExactly(lenBytes, 0, 8)
    let n = BitConverter.ToInt64(lenBytes, 0) |> int
    let json = Array.zeroCreate<byte> n
    f.ReadExactly(json, 0, n)
    use doc = Text.Json.JsonDocument.Parse(json)
    [ for p in doc.RootElement.EnumerateObject() do if p.Name <> "__metadata__" then yield p.Name ] |> List.sort

let stateKeys (m: torch.nn.Module) =
    [ for kv in m.state_dict() -> kv.Key ] |> List.sort

let paramCount (m: torch.nn.Module) = m.parameters() |> Seq.sumBy (fun p -> p.numel())

/// The message of the ArgumentException that f throws (fails the test if it throws nothing).
let argError (f: unit -> unit) =
    try f (); failwith "expected an ArgumentException" with :? ArgumentException as e -> e.Message

let configOf name = ModelArgs.FromFile(Generators.fixture (name + ".json"))

let countTests =
    testList "parameter counts" [
        for name, args, expected in
            [ "vit_tiny_patch16_224", ModelArgs.Empty, 5_717_416L
              "vit_small_patch16_224", ModelArgs.Empty, 22_050_664L
              "vit_base_patch16_224", ModelArgs.Empty, 86_567_656L
              "vit_base_patch16_224", ModelArgs.Empty.With("num_classes", 100), 85_875_556L
              "vit_large_patch16_224", ModelArgs.Empty, 304_326_632L
              "convnext_tiny", ModelArgs.Empty, 28_589_128L
              "convnext_small", ModelArgs.Empty, 50_223_688L
              "convnext_base", ModelArgs.Empty, 88_591_464L ] do
            test $"{name} {String.Join(',', args.Keys)}" {
                Expect.equal (Zoo.ParameterCount(name, args)) expected "timm's parameter count"
            }
        test "every registered name builds on the meta device" {
            for n in Zoo.Names do
                Expect.isGreaterThan (Zoo.ParameterCount n) 0L n
        }
        test "meta and cpu counts agree (vit_tiny)" {
            use m = Zoo.Create "vit_tiny_patch16_224"
            Expect.equal (paramCount m) 5_717_416L "cpu count"
        }
    ]

let keyTests =
    testList "state-dict keys" [
        for fx, family in [ "vit_tiny_p4_32", "vit"; "convnext_t_64", "convnext" ] do
            test $"{family} from {fx}.json has exactly timm's keys" {
                use m = Zoo.Create(family, configOf fx)
                Expect.sequenceEqual (stateKeys m) (headerKeys (Generators.fixture (fx + ".safetensors"))) "keys"
            }
    ]

let registryTests =
    testList "registry" [
        test "unknown name lists close matches" {
            let e = argError (fun () -> Zoo.Create "vit_bse_patch16_224" |> ignore)
            Expect.stringContains e "Unknown model 'vit_bse_patch16_224'" "names the input"
            Expect.stringContains e "vit_base_patch16_224" "suggests the close name"
            Expect.isFalse (e.Contains "convnext_tiny") "does not list far names"
            let e2 = argError (fun () -> Zoo.Create "convnext_tyni" |> ignore)
            Expect.stringContains e2 "convnext_tiny" "suggests convnext_tiny"
        }
        test "named models take overrides" {
            let args = ModelArgs.Empty.With("num_classes", 7).With("img_size", 32).With("in_chans", 1)
            use m = Zoo.Create("vit_tiny_patch16_224", args)
            use x = torch.randn(2L, 1L, 32L, 32L)
            use y = m.call x
            Expect.equal y.shape [| 2L; 7L |] "logits shape"
        }
        test "bad argument type is a clear error" {
            let e = argError (fun () -> Zoo.Create("vit", """{"depth": "two"}""") |> ignore)
            Expect.stringContains e "'depth'" "names the key"
        }
    ]

let tests = testList "Zoo" [ countTests; keyTests; registryTests ]
