namespace Lora.Dsl

open System
open System.IO
open FSharp.Compiler.Interactive.Shell

/// F# specs (.fsx) evaluated in-process by FSharp.Compiler.Service, with Lora.Dsl referenced and
/// opened and LORA_RUNNER defined: no build step. The script binds `experiments` (a list of experiments, or one experiment).
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

    /// The pretrain steps a script binds at its top level (`let base = pretrain { ... }`, or a list of
    /// them), by binding name in declaration order: how a step that no experiment uses is found.
    let private boundPretrains (session: FsiEvaluationSession) (moduleName: string) =
        let flags = Reflection.BindingFlags.Public ||| Reflection.BindingFlags.Static
        [ for asm in session.DynamicAssemblies do
              for t in asm.GetTypes() do
                  if t.Name = moduleName then
                      for prop in t.GetProperties flags |> Array.sortBy (fun p -> p.MetadataToken) do
                          if prop.GetIndexParameters().Length = 0 then
                              if prop.PropertyType = typeof<Pretrain> then
                                  yield prop.Name, (prop.GetValue null :?> Pretrain)
                              elif prop.PropertyType = typeof<Pretrain list> then
                                  for p in (prop.GetValue null :?> Pretrain list) do yield prop.Name, p ]

    /// An error of Validation.suite (at "experiments[i]...") placed at the line of the builder
    /// operation that caused it (SourceMarks).
    let locate (experiments: Experiment list) (e: SpecError) =
        let m = Text.RegularExpressions.Regex.Match(e.Field, @"^experiments\[(\d+)\]")
        if not m.Success then e
        else
            match List.tryItem (int m.Groups.[1].Value) experiments with
            | Some x -> SourceMarks.place (SourceMarks.below m.Value e.Field |> Option.bind (SourceMarks.inExperiment x)) e
            | None -> e

    /// Evaluate the script at `path` and return its `experiments` and the pretrain steps it binds
    /// (binding name, step), or the compiler's and the builders' errors (with line and column where
    /// the compiler gives them).
    let evaluateAll (path: string) : Result<Experiment list * (string * Pretrain) list, SpecError list> =
        let full = Path.GetFullPath path
        let dsl = typeof<Experiment>.Assembly.Location
        // LORA_RUNNER: a script's editor preamble (#if !LORA_RUNNER #r ".../Lora.Dsl.dll" #endif) is
        // skipped here, where this very Lora.Dsl is referenced and opened
        let argv = [| "fsi"; "--noninteractive"; "--nologo"; "--gui-"; "--optimize-"; "--define:LORA_RUNNER"; "-r:" + dsl |]
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
        // the builders defer their checks to Spec.checkWith (every error at once); what only an
        // operation sees comes back here
        let evaluated, seen = SourceMarks.collecting (fun () -> session.EvalScriptNonThrowing full)
        let seen = seen |> List.map (fun e -> { e with File = if e.File = "" || e.File = full then path else e.File })
        let fail ex diags = match fail ex diags with Error errs -> Error(seen @ errs) | ok -> ok
        match evaluated with
        | Choice2Of2 ex, diags -> fail (Some ex) diags
        | Choice1Of2 (), diags when diags |> Array.exists (fun d -> d.Severity = FSharp.Compiler.Diagnostics.FSharpDiagnosticSeverity.Error) -> fail None diags
        | Choice1Of2 (), _ when not seen.IsEmpty -> Error seen
        | Choice1Of2 (), _ ->
            // a script's bindings live in a module named after its file (quickstart.fsx -> Quickstart)
            let name = Path.GetFileNameWithoutExtension full
            let moduleName = string (Char.ToUpperInvariant name.[0]) + name.Substring 1
            match session.EvalExpressionNonThrowing(sprintf "``%s``.experiments" moduleName) with
            | Choice1Of2(Some v), _ -> toExperiments path v.ReflectionValue |> Result.map (fun es -> es, boundPretrains session moduleName)
            | _ -> Error [ err path "the script must bind `experiments` (e.g. let experiments = [ experiment { ... } ])" ]


/// What loading a spec found: its experiments or every error, and warnings, which do not stop a run
/// (a pretrain step that no experiment uses).
type SpecCheck =
    { Result: Result<Experiment list, SpecError list>
      Warnings: SpecError list }

/// Loading a spec file (.yaml/.yml or .fsx) with every check, including that paths exist.
module Spec =
    /// A declared pretrain step that no experiment uses: a warning. Its fields are still checked
    /// like a used step's, so a typo in it is an error all the same.
    let private unused (field: string) (binding: string) (p: Pretrain) =
        let bound, use' =
            if binding = "" then "", sprintf "model: { pretrain: %s }" p.Name
            else sprintf " (let %s)" binding, "model (fromPretrain " + binding + ")"
        { File = ""; Line = 0; Column = 0; Field = field
          Message = sprintf "pretrain step '%s'%s is not used by any experiment: use it as a base model, %s, or remove it" p.Name bound use' }

    /// The experiments of a spec, or every problem in it (each with its location), and its warnings.
    let checkWith (exists: string -> bool) (path: string) : SpecCheck =
        let fileErr m = { Result = Error [ { File = path; Line = 0; Column = 0; Field = "spec"; Message = m } ]; Warnings = [] }
        // relative paths start at the spec's folder: checked there, and resolved to full paths in
        // the experiments (messages keep the paths as written)
        let specDir = Path.GetDirectoryName(Path.GetFullPath path)
        let exists p = exists (SpecPaths.resolve specDir p)
        let outcome errs experiments = match errs with [] -> Ok(List.map (SpecPaths.experiment specDir) experiments) | errs -> Error errs
        if Directory.Exists path then fileErr "this is a folder, not a spec file: give the path of a .yaml or .fsx file"
        elif not (File.Exists path) then fileErr "spec file not found"
        elif FileInfo(path).Length > 16L * 1024L * 1024L then fileErr (sprintf "the spec is %d bytes, more than the 16 MiB allowed" (FileInfo(path).Length))
        else
            match Path.GetExtension(path).ToLowerInvariant() with
            | ".yaml" | ".yml" ->
                let text =
                    try Ok(File.ReadAllText path)
                    with e -> Error e.Message
                match text with
                | Error m -> fileErr (sprintf "cannot read the spec: %s" m)
                | Ok text ->
                    let spec = YamlSpec.read path text
                    let structural = spec.Errors
                    let unusedSteps = spec.Pretrains |> List.filter (fun d -> not d.Used)
                    // a field that could not be read is reported once, by the reader
                    let covered (e: SpecError) =
                        structural |> List.exists (fun s -> e.Field = s.Field || e.Field.StartsWith(s.Field + ".") || e.Field.StartsWith(s.Field + "["))
                    let checks =
                        [ yield! Validation.suite exists spec.Experiments
                          for d in unusedSteps do yield! Validation.pretrain exists d.Path d.Step ]
                        |> List.filter (covered >> not)
                        |> List.map (YamlSpec.locate path spec.Marks)
                    let warnings = [ for d in unusedSteps -> YamlSpec.locate path spec.Marks (unused d.Path "" d.Step) ]
                    // what the core would refuse in a run (with a run check: `lora validate`), once the spec itself is valid
                    let errs = structural @ checks
                    let errs = if errs.IsEmpty then Validation.runs (List.map (SpecPaths.experiment specDir) spec.Experiments) |> List.map (YamlSpec.locate path spec.Marks) else errs
                    { Result = outcome (errs |> List.sortBy (fun e -> e.Line, e.Column)) spec.Experiments; Warnings = warnings }
            | ".fsx" ->
                match FsxSpec.evaluateAll path with
                | Error errs -> { Result = Error errs; Warnings = [] }
                | Ok(experiments, bound) ->
                    let used = experiments |> List.collect Grid.pretrains
                    let unusedSteps = bound |> List.distinctBy snd |> List.filter (fun (_, p) -> not (List.contains p used))
                    // the same path as the pretrain builder's own check
                    let at (p: Pretrain) = if String.IsNullOrWhiteSpace p.Name then "pretrain" else p.Name
                    let errs =
                        [ yield! Validation.suite exists experiments |> List.map (FsxSpec.locate experiments)
                          for _, p in unusedSteps do
                              yield! Validation.pretrain exists (at p) p
                                     |> List.map (fun e -> SourceMarks.place (SourceMarks.below (at p) e.Field |> Option.bind (SourceMarks.nearest (SourceMarks.get p))) e) ]
                    let errs = if errs.IsEmpty then Validation.runs (List.map (SpecPaths.experiment specDir) experiments) |> List.map (FsxSpec.locate experiments) else errs
                    // the script's own path as given (a #load-ed file's full path stays)
                    let full = Path.GetFullPath path
                    let file (e: SpecError) = { e with File = if e.File = "" || e.File = full then path else e.File }
                    { Result = outcome (errs |> List.map file |> List.sortBy (fun e -> e.File <> path, e.File, e.Line)) experiments
                      Warnings = [ for binding, p in unusedSteps -> { unused (at p) binding p with File = path } ] }
            | ext -> fileErr (sprintf "unknown spec type '%s': use .yaml, .yml or .fsx" ext)

    /// The experiments of a spec, or every problem in it (each with its location).
    let loadWith (exists: string -> bool) (path: string) : Result<Experiment list, SpecError list> = (checkWith exists path).Result

    let check path = checkWith Validation.pathExists path

    let load path = loadWith Validation.pathExists path

    /// Every run of the experiments: the pretrain steps first (once each), then each grid, then its
    /// combinations (after the runs they combine).
    let runs (experiments: Experiment list) : Run list =
        let pretrains = experiments |> List.collect Grid.pretrains |> List.distinct |> List.map Grid.pretrainRun
        pretrains @ (experiments |> List.collect (fun e -> Grid.expand e @ Grid.combinations e))
