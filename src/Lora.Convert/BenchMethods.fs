/// The methods `lora bench` compares, configured as the reference script configures them
/// (../shared/gpu/peft_anchor.py: timm + PEFT), written in a spec's method vocabulary and converted
/// by ToCore like any spec's method; the rank is the bench's --rank.
module Lora.Conversion.BenchMethods

open System
open Lora.Core.Tuning
open TorchSharp

let presets =
    [ "full", "full"
      "lora", "lora: { targets: [qkv], modules_to_save: [head] }"
      "lora-all", "lora: { targets: [qkv, proj, fc1, fc2], modules_to_save: [head] }"
      "dora", "dora: { targets: [qkv], modules_to_save: [head] }"
      // LoRA's options (same parameters as lora; lora-qv: 2/3 of B, twice A)
      "lora-pissa", "lora: { targets: [qkv], init: pissa, modules_to_save: [head] }"
      "lora-olora", "lora: { targets: [qkv], init: olora, modules_to_save: [head] }"
      "loraplus", "lora: { targets: [qkv], loraplus_lr_ratio: 16, modules_to_save: [head] }"
      "lora-qv", "lora: { targets: [qkv], fused_qkv: [q, v], modules_to_save: [head] }"
      // PEFT's AdaLoraConfig(init_r=⌈1.5 r⌉, target_r=r, tinit=10, tfinal=10); lora_alpha 8 is PEFT's default
      "adalora", "adalora: { targets: [qkv], alpha: 8, tinit: 10, tfinal: 10, modules_to_save: [head] }"
      // bottleneck width = rank, as `lora run` does when an adapter has no ratio
      "adapter", "adapter: { modules_to_save: [head] }"
      // every bias / norm / layer the method fits (outside the head), as the papers tune them
      "bitfit", "bitfit: { modules_to_save: [head] }"
      "ln_tuning", "ln_tuning: { modules_to_save: [head] }"
      "ssf", "ssf: { modules_to_save: [head] }"
      // PEFT's ViT setting in timm's names
      "ia3", "ia3: { targets: [qkv, fc2], feedforward: [fc2], modules_to_save: [head] }"
      // PEFT's LoHaConfig / LoKrConfig default alpha 8
      "loha", "loha: { targets: [qkv], alpha: 8, modules_to_save: [head] }"
      "lokr", "lokr: { targets: [qkv], alpha: 8, modules_to_save: [head] }"
      "vera", "vera: { targets: [qkv], modules_to_save: [head] }"
      // bottleneck width = rank
      "adaptformer", "adaptformer: { modules_to_save: [head] }"
      // prompt tokens = rank
      "vpt", "vpt: { modules_to_save: [head] }"
      "vpt-deep", "vpt: { deep: true, modules_to_save: [head] }"
      // bottleneck width = rank
      "convpass", "convpass: { modules_to_save: [head] }"
      // factor rank = rank; the paper's qkv, proj, fc1, fc2
      "fact", "fact: { modules_to_save: [head] }"
      "fact-tk", "fact: { variant: tk, modules_to_save: [head] }"
      // oft_block_size = rank
      "oft", "oft: { targets: [qkv], modules_to_save: [head] }"
      // boft_block_size = rank
      "boft", "boft: { targets: [qkv], modules_to_save: [head] }"
      // r reflections = rank
      "hra", "hra: { targets: [qkv], modules_to_save: [head] }" ]

/// The preset names, in the order they are usually listed.
let names = presets |> List.map fst

/// A preset at a rank on a model, in Core's terms.
let methodOn (name: string) (rank: int) (model: torch.nn.Module) : CoreMethod =
    let text =
        match List.tryFind (fun (n, _) -> n = name) presets with
        | Some(_, t) -> t
        | None -> raise (ArgumentException(sprintf "unknown benchmark method '%s'; known: %s" name (String.Join(", ", names))))
    match ToCore.parseMethod text (Some rank) with
    | Ok m -> ToCore.methodOf (lazy (Lora.Core.Models.Zoo.Classifier model)) (if m.UsesRank then Some rank else None) m
    | Error e -> raise (ArgumentException(String.Join("; ", e)))

/// The tuning configuration of a preset on a model, or null when it adds no adapter (full).
let config (name: string) (rank: int) (model: torch.nn.Module) : TuningConfig =
    match methodOn name rank model with
    | CoreMethod.Tune c -> c
    | CoreMethod.TrainAll | CoreMethod.TrainOnly _ -> null

/// What Benchmark.Run applies to its model: the tuned model, or null.
let apply (name: string, rank: int) : Func<torch.nn.Module, TunedModel> =
    Func<_, _>(fun model -> ToCore.apply (methodOn name rank model) model)
