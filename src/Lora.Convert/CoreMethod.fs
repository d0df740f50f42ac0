namespace Lora.Conversion

open System
open System.Collections.Generic
open Lora.Core.Tuning

/// What a run's method does to a model, in Lora.Core's terms: every parameter trains (full
/// fine-tuning), only some modules train (the head), or a tuning method is applied.
[<RequireQualifiedAccess>]
type CoreMethod =
    | TrainAll
    /// module patterns (ModulePattern's rules): a parameter trains when a module on its path matches
    | TrainOnly of modules: string list
    | Tune of config: TuningConfig

    /// For C#: one function per case, so that a new case is a compile error there too.
    member m.Match<'T>(trainAll: Func<'T>, trainOnly: Func<IReadOnlyList<string>, 'T>, tune: Func<TuningConfig, 'T>) : 'T =
        match m with
        | TrainAll -> trainAll.Invoke()
        | TrainOnly modules -> trainOnly.Invoke(List.toArray modules)
        | Tune c -> tune.Invoke c

    /// One line saying what trains ("full fine-tuning", "head only (head)", "LoRA r=2 alpha=4 on fc1").
    member m.Describe() =
        match m with
        | TrainAll -> "full fine-tuning"
        | TrainOnly modules -> sprintf "head only (%s)" (String.Join(", ", modules))
        | Tune c -> c.Describe()
