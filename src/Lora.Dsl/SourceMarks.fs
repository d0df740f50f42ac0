namespace Lora.Dsl

open System.Runtime.CompilerServices
open System.Text.RegularExpressions

/// Where a builder operation of an F# spec was written (the compiler's caller file and line).
type SourceMark = { File: string; Line: int }

/// The source lines of the builders' values (`experiment { ... }`, `pretrain { ... }`), by field
/// ("epochs", "methods", "models"; "" for the builder itself), so that an F# spec's errors name the
/// line that caused them as YAML errors do. Kept beside the values, keyed by their identity: the
/// records (their equality, their hashes in Canonical) never see a position.
module SourceMarks =
    let private table = ConditionalWeakTable<obj, Map<string, SourceMark>>()

    /// The marks of a builder's value (empty for a record built otherwise).
    let get (value: obj) : Map<string, SourceMark> =
        match table.TryGetValue value with
        | true, marks -> marks
        | _ -> Map.empty

    /// `value` (the next state of a builder) with the marks of `from` and each field at file:line.
    let mark (from: obj) (fields: string list) (file: string) (line: int) (value: 'T) : 'T =
        if line > 0 then
            let marks = fields |> List.fold (fun m f -> Map.add f { File = file; Line = line } m) (get from)
            table.AddOrUpdate(box value, marks)
        value

    /// The mark of the nearest enclosing field of `path` ("methods[2].orth_reg" → "methods[2]" →
    /// "methods" → the builder's own line).
    let rec nearest (marks: Map<string, SourceMark>) (path: string) : SourceMark option =
        match marks.TryFind path with
        | Some m -> Some m
        | None when path = "" -> None
        | None ->
            let cut = max (path.LastIndexOf '.') (path.LastIndexOf '[')
            nearest marks (if cut > 0 then path.Substring(0, cut) else "")

    /// The mark of a path inside an experiment: a pretrain step's own lines for its fields
    /// ("models[0].pretrain.epochs"), else the experiment's.
    let inExperiment (e: Experiment) (path: string) : SourceMark option =
        let m = Regex.Match(path, @"^models\[(\d+)\]\.pretrain(?:\.(.*))?$")
        let inStep =
            if not m.Success then None
            else
                match List.tryItem (int m.Groups.[1].Value) e.Models with
                | Some(FromPretrain p) -> nearest (get p) m.Groups.[2].Value
                | _ -> None
        match inStep with
        | Some _ -> inStep
        | None -> nearest (get e) path

    /// An error placed at a mark (the column unknown: 0).
    let place (mark: SourceMark option) (e: SpecError) =
        match mark with
        | Some m -> { e with File = m.File; Line = m.Line; Column = 0 }
        | None -> e

    /// The path of an error below `prefix` ("experiments[0]" in "experiments[0].epochs": "epochs"),
    /// or None when it is not below it.
    let below (prefix: string) (field: string) =
        if field = prefix then Some ""
        elif field.StartsWith(prefix + ".") then Some(field.Substring(prefix.Length + 1))
        elif field.StartsWith(prefix + "[") then Some(field.Substring prefix.Length)
        else None

    // An F# spec evaluated by the runner (FsxSpec) checks its values once they are all built, so
    // that every error comes at once; a script run elsewhere (dotnet fsi) fails at the first
    // builder that is invalid. Problems that only a builder operation sees are collected meanwhile.
    let private collector = System.Threading.AsyncLocal<ResizeArray<SpecError>>()

    /// Runs `f` with the builders deferring their checks; the problems they saw themselves.
    let collecting (f: unit -> 'a) : 'a * SpecError list =
        let previous = collector.Value
        let seen = ResizeArray()
        collector.Value <- seen
        try
            let result = f ()
            result, List.ofSeq seen
        finally collector.Value <- previous

    /// Whether the builders defer their checks (inside `collecting`).
    let deferred () = not (isNull collector.Value)

    /// A builder operation's problem: collected when deferred, else raised (SpecException).
    let report (e: SpecError) =
        match collector.Value with
        | null -> raise (SpecException [ e ])
        | seen -> seen.Add e
