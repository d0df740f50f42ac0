/// The methods `lora bench` compares, configured as the reference script configures them
/// (../shared/gpu/peft_anchor.py: timm + PEFT), written in a spec's method vocabulary and converted
/// by ToCore like any spec's method; the rank is the bench's --rank. The layers a preset targets
/// are the model family's (Lora.Core.Models.FamilyTargets: a ViT's qkv, a ConvNeXt's fc1/fc2, a
/// ResNet's conv1/conv2), or `--targets` for every preset that takes targets.
module Lora.Conversion.BenchMethods

open System
open Lora.Core.Models
open Lora.Core.Tuning
open TorchSharp

/// What the presets target on one model.
type Targets =
    { /// `lora`, `dora`, `adalora`, `loha`, `lokr`, `vera`
      LowRank: string list
      /// `lora-all`
      All: string list
      /// (IA)³'s feed-forward layers (scaled at their input)
      FeedForward: string list }

/// A ViT's names: a model outside the zoo's families (an imported graph) gets the presets as
/// written for the reference script.
let private vitTargets = { LowRank = [ "qkv" ]; All = [ "qkv"; "proj"; "fc1"; "fc2" ]; FeedForward = [ "fc2" ] }

/// The presets' targets on a model: the family's, or `given` (--targets) for all of them (the
/// family's feed-forward layers among them stay feed-forward for (IA)³).
let targetsOf (given: string list) (model: torch.nn.Module) : Targets =
    let family =
        match FamilyTargets.For model with
        | null -> vitTargets
        | f -> { LowRank = List.ofSeq f.LowRank; All = List.ofSeq f.All; FeedForward = List.ofSeq f.FeedForward }
    match given with
    | [] -> family
    | ts -> { LowRank = ts; All = ts; FeedForward = family.FeedForward |> List.filter (fun f -> List.contains f ts) }

// a JSON string is a YAML double-quoted scalar (a regex's backslashes survive)
let private list (xs: string list) = "[" + String.Join(", ", xs |> List.map (fun x -> Text.Json.JsonSerializer.Serialize x)) + "]"

let presets : (string * (Targets -> string)) list =
    [ "full", (fun _ -> "full")
      "lora", (fun t -> $"lora: {{ targets: {list t.LowRank}, modules_to_save: [head] }}")
      "lora-all", (fun t -> $"lora: {{ targets: {list t.All}, modules_to_save: [head] }}")
      "dora", (fun t -> $"dora: {{ targets: {list t.LowRank}, modules_to_save: [head] }}")
      // LoRA's options (same parameters as lora; lora-qv: 2/3 of B, twice A)
      "lora-pissa", (fun t -> $"lora: {{ targets: {list t.LowRank}, init: pissa, modules_to_save: [head] }}")
      "lora-olora", (fun t -> $"lora: {{ targets: {list t.LowRank}, init: olora, modules_to_save: [head] }}")
      "loraplus", (fun t -> $"lora: {{ targets: {list t.LowRank}, loraplus_lr_ratio: 16, modules_to_save: [head] }}")
      "lora-qv", (fun t -> $"lora: {{ targets: {list t.LowRank}, fused_qkv: [q, v], modules_to_save: [head] }}")
      // PEFT's AdaLoraConfig(init_r=⌈1.5 r⌉, target_r=r, tinit=10, tfinal=10); lora_alpha 8 is PEFT's default
      "adalora", (fun t -> $"adalora: {{ targets: {list t.LowRank}, alpha: 8, tinit: 10, tfinal: 10, modules_to_save: [head] }}")
      // bottleneck width = rank, as `lora run` does when an adapter has no ratio
      "adapter", (fun _ -> "adapter: { modules_to_save: [head] }")
      // every bias / norm / layer the method fits (outside the head), as the papers tune them
      "bitfit", (fun _ -> "bitfit: { modules_to_save: [head] }")
      "ln_tuning", (fun _ -> "ln_tuning: { modules_to_save: [head] }")
      "ssf", (fun _ -> "ssf: { modules_to_save: [head] }")
      // PEFT's ViT setting (qkv + fc2, fc2 feed-forward) in the family's names
      "ia3", (fun t -> $"ia3: {{ targets: {list (List.distinct (t.LowRank @ t.FeedForward))}, feedforward: {list t.FeedForward}, modules_to_save: [head] }}")
      // PEFT's LoHaConfig / LoKrConfig default alpha 8
      "loha", (fun t -> $"loha: {{ targets: {list t.LowRank}, alpha: 8, modules_to_save: [head] }}")
      "lokr", (fun t -> $"lokr: {{ targets: {list t.LowRank}, alpha: 8, modules_to_save: [head] }}")
      "vera", (fun t -> $"vera: {{ targets: {list t.LowRank}, modules_to_save: [head] }}")
      // bottleneck width = rank
      "adaptformer", (fun _ -> "adaptformer: { modules_to_save: [head] }")
      // prompt tokens = rank
      "vpt", (fun _ -> "vpt: { modules_to_save: [head] }")
      "vpt-deep", (fun _ -> "vpt: { deep: true, modules_to_save: [head] }")
      // bottleneck width = rank
      "convpass", (fun _ -> "convpass: { modules_to_save: [head] }")
      // factor rank = rank; the paper's qkv, proj, fc1, fc2
      "fact", (fun _ -> "fact: { modules_to_save: [head] }")
      "fact-tk", (fun _ -> "fact: { variant: tk, modules_to_save: [head] }")
      // oft_block_size = rank
      "oft", (fun t -> $"oft: {{ targets: {list t.LowRank}, modules_to_save: [head] }}")
      // boft_block_size = rank
      "boft", (fun t -> $"boft: {{ targets: {list t.LowRank}, modules_to_save: [head] }}")
      // r reflections = rank
      "hra", (fun t -> $"hra: {{ targets: {list t.LowRank}, modules_to_save: [head] }}") ]

/// The preset names, in the order they are usually listed.
let names = presets |> List.map fst

/// A preset's method text on a model (the spec vocabulary), with the family's targets or `targets`.
let text (name: string) (targets: string list) (model: torch.nn.Module) : string =
    match List.tryFind (fun (n, _) -> n = name) presets with
    | Some(_, t) -> t (targetsOf targets model)
    | None -> raise (ArgumentException(sprintf "unknown benchmark method '%s'; known: %s" name (String.Join(", ", names))))

/// A preset at a rank on a model, in Core's terms, targeting `targets` ([]: the family's).
let methodOnTargets (name: string) (rank: int) (targets: string list) (model: torch.nn.Module) : CoreMethod =
    match ToCore.parseMethod (text name targets model) (Some rank) with
    | Ok m -> ToCore.methodOf (lazy (Lora.Core.Models.Zoo.Classifier model)) (if m.UsesRank then Some rank else None) m
    | Error e -> raise (ArgumentException(String.Join("; ", e)))

/// A preset at a rank on a model with the family's targets, in Core's terms.
let methodOn (name: string) (rank: int) (model: torch.nn.Module) : CoreMethod = methodOnTargets name rank [] model

/// The tuning configuration of a preset on a model, or null when it adds no adapter (full).
let config (name: string) (rank: int) (model: torch.nn.Module) : TuningConfig =
    match methodOn name rank model with
    | CoreMethod.Tune c -> c
    | CoreMethod.TrainAll | CoreMethod.TrainOnly _ -> null

/// Every problem the preset would meet on the model (ToCore.check), without changing it: what a
/// bench of it would fail with, found on the meta device.
let check (name: string) (rank: int) (targets: string list) (model: torch.nn.Module) : string list =
    try ToCore.check (methodOnTargets name rank targets model) model
    with :? ArgumentException as e -> [ e.Message ]

/// What Benchmark.Run applies to its model: the tuned model, or null; `targets` ([]: the family's).
let apply (name: string, rank: int, targets: string list) : Func<torch.nn.Module, TunedModel> =
    Func<_, _>(fun model -> ToCore.apply (methodOnTargets name rank targets model) model)
