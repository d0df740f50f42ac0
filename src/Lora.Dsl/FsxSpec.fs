namespace Lora.Dsl

open System
open System.IO
open FSharp.Compiler.Interactive.Shell

/// F# specs (.fsx) evaluated in-process by FSharp.Compiler.Service, with Lora.Dsl referenced and
/// opened: no build step. The script binds `experiments` (a list of experiments, or one experiment).
module FsxSpec =
    let private err file message = { File = file; Line = 0; Column = 0; Field = "script"; Message = message }

    let rec private unwrap (e: exn) =
        match e with
        | :? Reflection.TargetInvocationException as t when not (isNull t.InnerException) -> unwrap t.InnerException
        | :? AggregateException as a when a.InnerExceptions.Count = 1 -> unwrap a.InnerExceptions.[0]
        | e when not (isNull e.InnerException) && (e.InnerException :? SpecException) -> e.InnerException
        | e -> e

    let private toExperiments (file: string) (value: obj) =
        match value with
        | :? Experiment as e -> Ok [ e ]
        | :? (Experiment list) as es -> Ok es
        | :? seq<Experiment> as es -> Ok(List.ofSeq es)
        | null -> Error [ err file "`experiments` is null" ]
        | v -> Error [ err file (sprintf "`experiments` must be an experiment or a list of experiments, got %s" (v.GetType().Name)) ]

    /// Evaluate the script at `path` and return its `experiments`, or the compiler's and the builders'
    /// errors (with line and column where the compiler gives them).
    let evaluate (path: string) : Result<Experiment list, SpecError list> =
        let full = Path.GetFullPath path
        let dsl = typeof<Experiment>.Assembly.Location
        let argv = [| "fsi"; "--noninteractive"; "--nologo"; "--gui-"; "--optimize-"; "-r:" + dsl |]
        use out = new StringWriter()
        use errOut = new StringWriter()
        let config = FsiEvaluationSession.GetDefaultConfiguration()
        use session = FsiEvaluationSession.Create(config, argv, new StringReader(""), out, errOut, collectible = false)
        let fail (ex: exn option) (diags: FSharp.Compiler.Diagnostics.FSharpDiagnostic[]) =
            let fromDiags =
                diags
                |> Array.filter (fun d -> d.Severity = FSharp.Compiler.Diagnostics.FSharpDiagnosticSeverity.Error)
                |> Array.map (fun d -> { File = path; Line = d.StartLine; Column = d.StartColumn + 1; Field = "script"; Message = d.Message })
                |> List.ofArray
            match Option.map unwrap ex with
            | Some(SpecException errs) -> Error(errs |> List.map (fun e -> { e with File = path }))
            | Some e when List.isEmpty fromDiags -> Error [ err path (sprintf "the script failed: %s" e.Message) ]
            | _ when List.isEmpty fromDiags -> Error [ err path "the script failed" ]
            | _ -> Error fromDiags
        session.EvalInteractionNonThrowing "open Lora.Dsl" |> ignore
        match session.EvalScriptNonThrowing full with
        | Choice2Of2 ex, diags -> fail (Some ex) diags
        | Choice1Of2 (), diags when diags |> Array.exists (fun d -> d.Severity = FSharp.Compiler.Diagnostics.FSharpDiagnosticSeverity.Error) -> fail None diags
        | Choice1Of2 (), _ ->
            // a script's bindings live in a module named after its file (quickstart.fsx -> Quickstart)
            let name = Path.GetFileNameWithoutExtension full
            let moduleName = string (Char.ToUpperInvariant name.[0]) + name.Substring 1
            match session.EvalExpressionNonThrowing(sprintf "``%s``.experiments" moduleName) with
            | Choice1Of2(Some v), _ -> toExperiments path v.ReflectionValue
            | _ -> Error [ err path "the script must bind `experiments` (e.g. let experiments = [ experiment { ... } ])" ]

/// Loading a spec file (.yaml/.yml or .fsx) with every check, including that paths exist.
module Spec =
    /// The experiments of a spec, or every problem in it (each with its location).
    let loadWith (exists: string -> bool) (path: string) : Result<Experiment list, SpecError list> =
        let fileErr m = Error [ { File = path; Line = 0; Column = 0; Field = "spec"; Message = m } ]
        if not (File.Exists path) then fileErr "spec file not found"
        else
            match Path.GetExtension(path).ToLowerInvariant() with
            | ".yaml" | ".yml" ->
                let text =
                    try Ok(File.ReadAllText path)
                    with e -> Error e.Message
                match text with
                | Error m -> fileErr (sprintf "cannot read the spec: %s" m)
                | Ok text ->
                    let experiments, structural, marks = YamlSpec.parse path text
                    // a field that could not be read is reported once, by the reader
                    let covered (e: SpecError) =
                        structural |> List.exists (fun s -> e.Field = s.Field || e.Field.StartsWith(s.Field + ".") || e.Field.StartsWith(s.Field + "["))
                    let checks =
                        Validation.suite exists experiments
                        |> List.filter (covered >> not)
                        |> List.map (YamlSpec.locate path marks)
                    match structural @ checks |> List.sortBy (fun e -> e.Line, e.Column) with
                    | [] -> Ok experiments
                    | errs -> Error errs
            | ".fsx" ->
                match FsxSpec.evaluate path with
                | Error errs -> Error errs
                | Ok experiments ->
                    match Validation.suite exists experiments with
                    | [] -> Ok experiments
                    | errs -> Error(errs |> List.map (fun e -> { e with File = path }))
            | ext -> fileErr (sprintf "unknown spec type '%s': use .yaml, .yml or .fsx" ext)

    let load path = loadWith Validation.pathExists path

    /// Every run of the experiments: the pretrain steps first (once each), then each grid.
    let runs (experiments: Experiment list) : Run list =
        let pretrains = experiments |> List.collect Grid.pretrains |> List.distinct |> List.map Grid.pretrainRun
        pretrains @ (experiments |> List.collect Grid.expand)
