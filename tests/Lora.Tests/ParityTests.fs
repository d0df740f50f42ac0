/// The zoo and the tuners together against PEFT's own outputs (tests/fixtures/peft_lora_vit_tiny*).
module Lora.Tests.ParityTests

open Expecto
open TorchSharp
open Lora.Core.IO
open Lora.Core.Models
open Lora.Core.Tuning
open Lora.Tests.Generators

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32>() |> float

let private baseVit () =
    let m = Zoo.Create("vit", ModelArgs.FromFile(fixture "vit_tiny_p4_32.json"))
    StateDict.Load(m, fixture "vit_tiny_p4_32.safetensors") |> ignore
    m.eval()
    m

let tests =
    testList "Parity" [
        test "a PEFT LoRA adapter on the zoo ViT reproduces PEFT's logits, unmerged and merged" {
            use _ = torch.no_grad()
            let io = Safetensors.Load(fixture "peft_lora_vit_tiny.io.safetensors")
            use m = baseVit ()
            let plain = m.call io.["input"]
            let tuned = AdapterCheckpoint.Load(m, fixture "peft_lora_vit_tiny")
            m.eval()
            let unmerged = m.call io.["input"]
            Expect.isLessThan (maxAbs unmerged io.["logits_lora"]) 1e-4 "unmerged logits = PEFT's logits_lora"
            Expect.isGreaterThan (maxAbs plain io.["logits_lora"]) 1e-3 "the adapter changes the output (B is not zero)"
            let merged: torch.nn.Module = tuned.MergeAndUnload()
            merged.eval()
            let out = (merged :?> torch.nn.Module<torch.Tensor, torch.Tensor>).call io.["input"]
            Expect.isLessThan (maxAbs out io.["logits_merged"]) 1e-4 "merged logits = PEFT's logits_merged"
            let keys = merged.state_dict().Keys |> Seq.toList
            let timmKeys = Safetensors.ReadHeader(fixture "vit_tiny_p4_32.safetensors").Entries |> Seq.map (fun e -> e.Name) |> Set.ofSeq
            Expect.equal (Set.ofList keys) timmKeys "merge-and-unload leaves exactly timm's keys"
        }
    ]
