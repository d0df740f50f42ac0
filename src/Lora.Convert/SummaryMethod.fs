/// `lora summary`'s method flags as a spec's method: --method names it in the spec vocabulary, and
/// --targets, --alpha, --bias, --init-rank, --init, --fused-qkv and --train are written into its options (targets,
/// alpha, bias, init_rank, init, fused_qkv, modules_to_save), so a summary and a run of the same method agree.
module Lora.Conversion.SummaryMethod

open System
open System.Text.Json
open Lora.Dsl
open Lora.CommandLine
open Lora.Core.Tuning
open TorchSharp

let private quote (s: string) = JsonSerializer.Serialize s   // a JSON string is a YAML double-quoted scalar
let private list (xs: string list) = "[" + String.Join(", ", xs |> List.map quote) + "]"

/// The method as YAML text, e.g. `"lora": { targets: ["fc1", "fc2"], modules_to_save: [] }`.
let text (o: SummaryOptions) =
    // run names of variants (fact_tk, vpt_deep) name the method with its variant option
    let name, variant =
        match o.Method.ToLowerInvariant() with
        | "fact_tk" | "fact-tk" -> "fact", [ "variant: tk" ]
        | "vpt_deep" | "vpt-deep" -> "vpt", [ "deep: true" ]
        | n -> n, []
    let fields =
        [ yield! variant
          if not o.Targets.IsEmpty then yield "targets: " + list o.Targets
          if o.Alpha.HasValue then yield "alpha: " + o.Alpha.Value.ToString("R", Globalization.CultureInfo.InvariantCulture)
          if o.Bias <> "none" then yield "bias: " + quote o.Bias
          if o.InitRank.HasValue then yield sprintf "init_rank: %d" o.InitRank.Value
          if not (isNull o.Init) then yield "init: " + quote o.Init
          if not o.FusedQkv.IsEmpty then yield "fused_qkv: " + list o.FusedQkv
          // what trains beside the adapters: --train, none by default (tfimm's counts have no head);
          // `head` takes its modules as they are (below)
          if name <> "head" && (name <> "full" || not o.Train.IsEmpty) then yield "modules_to_save: " + list o.Train
          // without --rank an adapter's bottleneck is the library's default fraction of the block
          if name = "adapter" && not o.Rank.HasValue then
              yield "ratio: " + BottleneckAdapterConfig().Ratio.ToString("R", Globalization.CultureInfo.InvariantCulture) ]
    if fields.IsEmpty then quote name else sprintf "%s: { %s }" (quote name) (String.Join(", ", fields))

/// The method on the model, or what is wrong with the flags (one line).
let toCore (o: SummaryOptions) (model: torch.nn.Module) : Result<CoreMethod, string> =
    let given = if o.Rank.HasValue then Some o.Rank.Value else None
    match YamlSpec.method (text o) with
    | Error e -> Error(String.Join("; ", e))
    | Ok m ->
        // LoRA's ranks default to PEFT's r = 8
        let rank = match m with Lora _ | Dora _ | AdaLora _ | LoHa _ | LoKr _ when given.IsNone -> Some 8 | Vera _ when given.IsNone -> Some 256 | Oft _ when given.IsNone -> Some 32 | Boft _ when given.IsNone -> Some 4 | Hra _ when given.IsNone -> Some 8 | AdaptFormer _ when given.IsNone -> Some 64 | Vpt _ when given.IsNone -> Some 10 | Convpass _ | Fact _ when given.IsNone -> Some 8 | _ -> given
        match ToCore.parseMethod (text o) (if m.UsesRank then rank else None) with
        | Error e -> Error(String.Join("; ", e))
        | Ok m ->
            match m with
            | Head when not o.Train.IsEmpty -> Ok(CoreMethod.TrainOnly o.Train)
            | m when (m.IsFull || m.IsHead) && given.IsSome -> Error(sprintf "--rank does not apply to %s: it adds no adapters" m.Name)
            | m -> Ok(ToCore.methodOf (lazy (Lora.Core.Models.Zoo.Classifier model)) (if m.UsesRank then rank else None) m)
