/// Reliability (docs/reliability.md): hostile files are rejected with a message, a runner killed at
/// any moment resumes to the same results, two runners share a results folder without running a job
/// twice, and bad specs and I/O failures give located, one-line errors.
module Lora.Tests.ReliabilityTests

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text
open System.Text.Json.Nodes
open Expecto
open Lora.Core.Data
open Lora.Core.IO
open Lora.Core.Tuning
open Lora.Runner
open Lora.Tests.Generators

// ---------------------------------------------------------------------------------------------
// Fuzz regressions: every input that once crashed a fuzzer (fuzz/run.sh) must now be rejected
// with an InvalidDataException that has a message, or be read without error.

/// The parsers, fed exactly as fuzz/Lora.Fuzz/Targets.cs feeds them (file bytes → parser).
let private parsers: (string * (string -> unit)) list =
    [ "safetensors", fun file -> for t in Safetensors.Load(file).Values do t.Dispose()
      "idx", fun file -> IdxReader.Read file |> ignore
      "cifar", fun file ->
          // as in the fuzz target: the first byte picks CIFAR-10 (even) or CIFAR-100 (odd)
          let data = File.ReadAllBytes file
          let hundred = data.Length > 0 && data.[0] &&& 1uy = 1uy
          let body = file + ".body"
          File.WriteAllBytes(body, (if data.Length > 0 then data.[1..] else data))
          try
              let classes = if hundred then [| for i in 0..99 -> string i |] else Seq.toArray Cifar.Cifar10Classes
              Cifar.Read([| body |], (if hundred then 2 else 1), true, classes) |> ignore
          finally File.Delete body
      "adapter_config", fun file ->
          use dir = new TempDir()
          File.Copy(file, dir.File AdapterCheckpoint.ConfigFile)
          AdapterCheckpoint.ReadConfig dir.Path |> ignore
      "yaml", fun file ->
          let experiments, errors, _ = Lora.Dsl.YamlSpec.parse "fuzz.yaml" (File.ReadAllText file)
          if List.isEmpty errors then Lora.Dsl.Validation.suite (fun _ -> true) experiments |> ignore ]

/// Bad input is rejected with a message: InvalidDataException (the documented type) or nothing.
let private rejectsCleanly (parse: string -> unit) (file: string) =
    try parse file
    with
    | :? InvalidDataException as e -> Expect.isNonEmpty e.Message "the rejection says what is wrong"
    | e -> failtestf "%s: %s escaped (%s); only InvalidDataException is allowed" file (e.GetType().Name) e.Message

let private fuzzRegressions =
    testList "fuzz regressions" [
        for target, parse in parsers do
            let dir = fixture ("fuzz-regressions/" + target)
            if Directory.Exists dir then
                for file in Directory.GetFiles dir |> Array.sort do
                    test (sprintf "%s/%s" target (Path.GetFileName file)) {
                        // each input that once crashed a fuzzer is invalid: it must be rejected, not accepted
                        let accepted = try parse file; true with :? InvalidDataException -> false
                        Expect.isFalse accepted $"{file} is invalid and must be rejected"
                        rejectsCleanly parse file }
        test "every fuzz target has a seed corpus in the repo" {
            for target, _ in parsers do
                let seeds = Path.Combine(repoRoot, "fuzz", "corpus", target)
                Expect.isTrue (Directory.Exists seeds && Directory.GetFiles(seeds).Length > 0) (sprintf "fuzz/corpus/%s has seeds" target)
        }
        test "every seed in the corpora is read without error" {
            for target, parse in parsers do
                for file in Directory.GetFiles(Path.Combine(repoRoot, "fuzz", "corpus", target)) do
                    try parse file with e -> failtestf "seed %s fails: %s" file e.Message
        }
    ]

// ---------------------------------------------------------------------------------------------
// Headers that claim more than a file holds are errors before any allocation.

let private idxHeader (dims: int64 list) =
    [| yield! [| 0uy; 0uy; 8uy; byte dims.Length |]
       for d in dims do yield! [| byte (d >>> 24); byte (d >>> 16); byte (d >>> 8); byte d |] |]

let private allocatedDuring (f: unit -> unit) =
    let before = GC.GetAllocatedBytesForCurrentThread()
    f ()
    GC.GetAllocatedBytesForCurrentThread() - before

let private claims =
    testList "oversized claims" [
        test "an IDX claiming 10^12 items is an error before any allocation" {
            use dir = new TempDir()
            let path = dir.File "huge.idx"
            File.WriteAllBytes(path, idxHeader [ 1_000_000L; 1_000_000L ])
            let mutable message = ""
            let bytes = allocatedDuring (fun () ->
                try IdxReader.Read path |> ignore with :? InvalidDataException as e -> message <- e.Message)
            Expect.stringContains message "too large" "the error says the claim is too large"
            Expect.stringContains message "1000000x1000000" "the error names the dimensions"
            Expect.isLessThan bytes (1L <<< 20) "less than 1 MiB allocated"
        }
        test "an IDX claiming 4 G items in one dimension is refused" {
            use dir = new TempDir()
            let path = dir.File "huge1d.idx"
            File.WriteAllBytes(path, idxHeader [ 0xFFFFFFFFL ])
            let e = Expect.throwsC (fun () -> IdxReader.Read path |> ignore) id
            Expect.equal (e.GetType()) typeof<InvalidDataException> "InvalidDataException"
        }
        test "a gzip IDX that inflates past its header's size (a gzip bomb) stops at the claimed size" {
            use dir = new TempDir()
            let path = dir.File "bomb.idx.gz"
            do
                use f = File.Create path
                use gz = new GZipStream(f, CompressionLevel.Fastest)
                gz.Write(idxHeader [ 10L ])
                let zeros = Array.zeroCreate<byte> (1 <<< 20)
                for _ in 1..64 do gz.Write zeros // 64 MiB of trailing zeros, ~64 KiB compressed
            Expect.isLessThan (FileInfo(path).Length) (1L <<< 20) "the bomb is small on disk"
            let mutable message = ""
            let bytes = allocatedDuring (fun () ->
                try IdxReader.Read path |> ignore with :? InvalidDataException as e -> message <- e.Message)
            Expect.stringContains message "trailing data" "rejected as trailing data"
            Expect.isLessThan bytes (4L <<< 20) "the 64 MiB were never held in memory"
        }
        test "a truncated gzip IDX is an error with the file name" {
            use dir = new TempDir()
            let path = dir.File "cut.idx.gz"
            let rng = Random 6
            IdxReader.Write(path, [| 64; 64 |], Array.init 4096 (fun _ -> byte (rng.Next 256)))
            let bytes = File.ReadAllBytes path
            File.WriteAllBytes(path, bytes.[.. bytes.Length / 2])
            let e = Expect.throwsC (fun () -> IdxReader.Read path |> ignore) id
            Expect.equal (e.GetType()) typeof<InvalidDataException> "InvalidDataException"
            Expect.stringContains e.Message path "names the file"
        }
        test "a CIFAR batch with a label outside the classes is an error naming the record" {
            use dir = new TempDir()
            let path = dir.File "bad.bin"
            File.WriteAllBytes(path, Array.append [| 3uy |] (Array.zeroCreate 3072) |> Array.append (Array.append [| 200uy |] (Array.zeroCreate 3072)) )
            let e = Expect.throwsC (fun () -> Cifar.Read([| path |], 1, false, Cifar.Cifar10Classes) |> ignore) id
            Expect.equal (e.GetType()) typeof<InvalidDataException> "InvalidDataException"
            Expect.stringContains e.Message "record 0 has label 200" "names the record and label"
        }
        test "adapter_config.json fields of the wrong type are named in the error" {
            use dir = new TempDir()
            File.WriteAllText(dir.File AdapterCheckpoint.ConfigFile, """{"peft_type": "LORA", "r": "four", "target_modules": ["qkv"]}""")
            let e = Expect.throwsC (fun () -> AdapterCheckpoint.ReadConfig dir.Path |> ignore) id
            Expect.equal (e.GetType()) typeof<InvalidDataException> "InvalidDataException"
            Expect.stringContains e.Message "r must be a number" "names the field and the type"
            File.WriteAllText(dir.File AdapterCheckpoint.ConfigFile, """{"peft_type": "LORA", "r": 0}""")
            let e = Expect.throwsC (fun () -> AdapterCheckpoint.ReadConfig dir.Path |> ignore) id
            Expect.stringContains e.Message "r must be an integer from 1" "rank 0 is refused"
        }
    ]

// ---------------------------------------------------------------------------------------------
// The `lora` program as a child process.

/// lora.dll is copied beside the tests' binary (the test project references Lora.Runner).
let private loraDll = Path.Combine(AppContext.BaseDirectory, "lora.dll")
let private tinySpec = fixture "specs/tiny.yaml"

type private Child(args: string list) =
    let output = StringBuilder()
    let p =
        let si = ProcessStartInfo("dotnet", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        si.ArgumentList.Add loraDll
        for a in args do si.ArgumentList.Add a
        new Process(StartInfo = si)
    let append (e: DataReceivedEventArgs) = if not (isNull e.Data) then lock output (fun () -> output.AppendLine e.Data |> ignore)
    do
        p.OutputDataReceived.Add append
        p.ErrorDataReceived.Add append
        p.Start() |> ignore
        p.BeginOutputReadLine()
        p.BeginErrorReadLine()
    member _.Output = lock output (fun () -> output.ToString())
    /// Waits up to ms; true if the process ended.
    member _.Wait(ms: int) = p.WaitForExit ms
    /// Waits until the output has `count` lines containing `text` (true) or the process ends (false).
    member c.WaitForLines(text: string, count: int) =
        let seen () = c.Output.Split('\n') |> Array.filter (fun l -> l.Contains text) |> Array.length
        while seen () < count && not p.HasExited do Threading.Thread.Sleep 20
        seen () >= count
    member _.ExitCode = (p.WaitForExit(); p.ExitCode)
    member _.Kill() = (p.Kill true; p.WaitForExit())
    interface IDisposable with
        member _.Dispose() = (if not p.HasExited then p.Kill true); p.Dispose()

let private runToEnd (args: string list) =
    use c = new Child(args)
    Expect.isTrue (c.Wait 300_000) "lora finished within 5 minutes"
    c.ExitCode, c.Output

let private runLines (output: string) =
    output.Split('\n') |> Array.filter (fun l -> l.StartsWith "run ") |> Array.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries).[1])

/// The fields of metrics.json that a rerun must reproduce (not timings, memory, provenance, speed): bit
/// for bit, or within float noise (floatNoise below).
let private reproducible (metricsFile: string) =
    let o = JsonNode.Parse(File.ReadAllText metricsFile).AsObject()
    let extra = o.["extra"].DeepClone().AsObject()
    extra.Remove "images_per_second" |> ignore
    [ for k in [ "hash"; "id"; "labels"; "depends_on"; "config"; "metrics"; "params"; "curve" ] ->
        k, (match o.[k] with null -> "null" | n -> n.ToJsonString()) ]
    @ [ "extra", extra.ToJsonString() ]

/// A table with its train-time and peak-memory cells masked (they differ between any two runs).
let private maskedTable (file: string) =
    let lines = File.ReadAllLines file
    let header = lines |> Array.tryFind (fun l -> l.StartsWith "| " && l.Contains "train time")
    let cols =
        match header with
        | Some h -> h.Split('|') |> Array.indexed |> Array.choose (fun (i, c) -> if c.Trim() = "train time" || c.Trim().StartsWith "peak memory" then Some i else None)
        | None -> [||]
    lines |> Array.map (fun l ->
        if l.StartsWith "| " && not (l.StartsWith "| ---") && cols.Length > 0 then
            l.Split('|') |> Array.mapi (fun i c -> if Array.contains i cols then " * " else c) |> String.concat "|"
        else l)

let private filesUnder (dir: string) =
    if Directory.Exists dir then Directory.GetFiles(dir, "*", SearchOption.AllDirectories) |> Array.map (fun f -> Path.GetRelativePath(dir, f)) |> Array.sort
    else [||]

// Two `lora run` processes on this CPU have, rarely, trained the same plan to results that differ
// in the last bits (never reproduced on demand: docs/reliability.md, "Float noise between
// processes"). Adam's first step moves every weight by about ±lr whatever the gradient's size, so a
// near-zero gradient element whose last bit differs can flip its sign: the losses then differ from
// the second step on, by about 1e-7. Such a run is accepted, and said, when every number is within
// `floatNoise` (relative) of the reference and everything else is identical; any other difference
// fails, as does a difference in the runs, files, names, shapes or integers.
let private floatNoise = 1e-4

/// The numbers in a text, and the text between them.
let private numberToken = Text.RegularExpressions.Regex(@"-?\d+(\.\d+)?([eE][-+]?\d+)?")

/// None when the texts are identical; Some (largest relative difference) when they differ only in
/// decimals within floatNoise; a failure otherwise. In a table (`rounded`: numbers printed to a fixed
/// precision) a decimal may also differ by one unit of its last place: a rounding flip.
let private nearText (rounded: bool) (what: string) (actual: string) (expected: string) =
    if actual = expected then None
    else
        let split (s: string) = numberToken.Replace(s, "#"), [ for m in numberToken.Matches s -> m.Value ]
        let ta, na = split actual
        let te, ne = split expected
        if ta <> te || na.Length <> ne.Length then failtestf "%s differs beyond float noise:\n  actual:   %s\n  expected: %s" what actual expected
        let worst =
            List.zip na ne |> List.fold (fun worst (a, e) ->
                if a = e then worst
                else
                    let isInteger (s: string) = not (s.Contains "." || s.Contains "e" || s.Contains "E")
                    if isInteger a || isInteger e then failtestf "%s: the integer %s is %s in the reference" what a e
                    let x, y = float a, float e
                    let decimals (s: string) = match s.IndexOf '.' with -1 -> 0 | i -> (s.Split('e', 'E').[0].Length - i - 1)
                    let lastPlace = if not rounded || (a + e).Contains "e" || (a + e).Contains "E" then 0.0 else 10.0 ** float -(min (decimals a) (decimals e))
                    let rel = abs (x - y) / max (abs x) (abs y)
                    if rel > floatNoise && abs (x - y) > lastPlace * 1.000001 then
                        failtestf "%s: %s against the reference's %s (relative difference %.2g, more than float noise %g)" what a e rel floatNoise
                    max worst rel) 0.0
        Some worst

/// Two safetensors files: byte-identical (None), or the same tensors, each within floatNoise of
/// its largest magnitude (Some worst). A resume that lost a step moves weights by about lr (3e-3
/// here), 1e-2 of a typical tensor's largest weight.
let private nearWeights (what: string) (actual: string) (expected: string) =
    if File.ReadAllBytes actual = File.ReadAllBytes expected then None
    else
        let a, e = Safetensors.Load actual, Safetensors.Load expected
        try
            Expect.sequenceEqual (Seq.sort a.Keys) (Seq.sort e.Keys) (what + ": the same tensors")
            let worst =
                e.Keys |> Seq.fold (fun worst k ->
                    let x, y = a.[k], e.[k]
                    Expect.sequenceEqual x.shape y.shape (sprintf "%s: %s has the same shape" what k)
                    Expect.equal x.dtype y.dtype (sprintf "%s: %s has the same dtype" what k)
                    use x64 = x.``to``(TorchSharp.torch.ScalarType.Float64)
                    use y64 = y.``to``(TorchSharp.torch.ScalarType.Float64)
                    use diff = (x64 - y64).abs().max()
                    use scale = y64.abs().max()
                    let rel = diff.item<double>() / max (scale.item<double>()) 1e-12
                    if rel > floatNoise then failtestf "%s: %s differs by %.2g of its largest weight, more than float noise %g" what k rel floatNoise
                    max worst rel) 0.0
            Some worst
        finally
            for t in Seq.append a.Values e.Values do t.Dispose()

/// The float-noise comparison itself must tell noise from a real difference.
let private floatNoiseTests =
    let fails f = Expect.throwsT<AssertException> (f >> ignore)
    testList "float noise between processes" [
        test "identical texts are exact; last-bit differences are noise; anything else fails" {
            let curve = """{"step":2,"train_loss":1.638377070426941,"val_metric":0.3}"""
            Expect.isNone (nearText false "json" curve curve) "identical"
            let worst = nearText false "json" """{"step":2,"train_loss":1.6383763551712036,"val_metric":0.3}""" curve
            Expect.isSome worst "the CI run of 2026-12-01 against its reference: noise"
            Expect.isLessThan worst.Value 1e-6 "its relative difference"
            fails (fun () -> nearText false "json" """{"step":2,"train_loss":1.638377070426941,"val_metric":0.32}""" curve) "accuracy 0.32 against 0.3"
            fails (fun () -> nearText false "json" """{"step":3,"train_loss":1.638377070426941,"val_metric":0.3}""" curve) "a different step"
            fails (fun () -> nearText false "json" """{"step":2,"train_los":1.638377070426941,"val_metric":0.3}""" curve) "a different key"
            fails (fun () -> nearText false "json" """{"step":2,"train_loss":1.64,"val_metric":0.3}""" curve) "a loss 1e-3 away"
        }
        test "a table may differ by one unit of a printed digit, not more" {
            Expect.isSome (nearText true "table" "| lora | 30.1 | 1.4744 |" "| lora | 30.0 | 1.4744 |") "a rounding flip"
            fails (fun () -> nearText true "table" "| lora | 32.0 | 1.4744 |" "| lora | 30.0 | 1.4744 |") "one more image right"
            fails (fun () -> nearText false "json" "30.1" "30.0") "outside a table, no rounding allowance"
        }
    ]

/// Everything a finished results folder must hold, compared with the uninterrupted run's.
let private expectSameResults (expected: string) (actual: string) (what: string) =
    let hashes d = Directory.GetDirectories d |> Array.map Path.GetFileName |> Array.sort
    Expect.sequenceEqual (hashes actual) (hashes expected) (what + ": the same runs")
    let noise = Collections.Generic.List<string * float>()
    let note where = Option.iter (fun worst -> noise.Add(where, worst))
    for h in hashes expected do
        let m d = Path.Combine(d, h, ResultsStore.MetricsFile)
        Expect.isTrue (File.Exists(m actual)) (sprintf "%s: %s has metrics.json" what h)
        for (k, a), (k', e) in List.zip (reproducible (m actual)) (reproducible (m expected)) do
            Expect.equal k k' "the same fields"
            note (h + " " + k) (nearText false (sprintf "%s: %s %s" what h k) a e)
    // the trained weights themselves, byte for byte (or within float noise)
    let weights d = filesUnder (d + "-artifacts") |> Array.filter (fun f -> f.EndsWith ".safetensors" || f.EndsWith ".json")
    Expect.sequenceEqual (weights actual) (weights expected) (what + ": the same weight files")
    for f in weights expected do
        let file d = Path.Combine(d + "-artifacts", f)
        if f.EndsWith ".json" then note f (nearText false (sprintf "%s: %s" what f) (File.ReadAllText(file actual)) (File.ReadAllText(file expected)))
        else note f (nearWeights (sprintf "%s: %s" what f) (file actual) (file expected))
    // the regenerated tables
    let tables d =
        let out = d + "-tables"
        if not (Directory.Exists out) then
            let code, output = runToEnd [ "tables"; "--results"; d; "--out"; out ]
            Expect.equal code 0 (sprintf "lora tables: %s" output)
        out
    let te, ta = tables expected, tables actual
    let mds d = Directory.GetFiles(d, "*.md") |> Array.map Path.GetFileName |> Array.sort
    Expect.sequenceEqual (mds ta) (mds te) (what + ": the same tables")
    for f in mds te do
        let masked d = maskedTable (Path.Combine(d, f)) |> String.concat "\n"
        note f (nearText true (sprintf "%s: %s (times and memory masked)" what f) (masked ta) (masked te))
    if noise.Count > 0 then
        printfn "%s: equal within float noise, not bit for bit (docs/reliability.md): %s" what
            (noise |> Seq.map (fun (w, d) -> sprintf "%s %.1g" w d) |> String.concat "; ")
    // nothing half-written or left behind
    let leftovers =
        Array.append (filesUnder actual) (filesUnder (actual + "-artifacts"))
        |> Array.filter (fun f -> f.Contains ".tmp" || f.EndsWith ResultsStore.LockFile || f.Contains "checkpoint")
    Expect.isEmpty leftovers (sprintf "%s: no temporary, lock or checkpoint file left (found %A)" what leftovers)

/// The uninterrupted run every other result is compared with (run once, shared by the tests).
let private baseline =
    lazy
        (let root = Path.Combine(Path.GetTempPath(), "lora-reliability-" + Guid.NewGuid().ToString("N"))
         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> try Directory.Delete(root, true) with _ -> ())
         let dir = Path.Combine(root, "results")
         let clock = Stopwatch.StartNew()
         let code, output = runToEnd [ "run"; tinySpec; "--results"; dir ]
         if code <> 0 then failtestf "the uninterrupted run failed (%d):\n%s" code output
         dir, clock.Elapsed.TotalMilliseconds, runLines output)

let private killSeed =
    match Environment.GetEnvironmentVariable "LORA_KILL_SEED" with
    | null | "" -> Random.Shared.Next(1_000_000)
    | s -> int s

let private crashSafety =
    testSequenced <| testList "crash safety" [
        test "runs killed with SIGKILL at random moments resume to the uninterrupted results" {
            let expected, ms, hashes = baseline.Force()
            Expect.equal hashes.Length 4 (sprintf "the tiny plan has a pretraining and three tunes: %A" hashes)
            let rng = Random killSeed
            printfn "kill-resume: seed %d (LORA_KILL_SEED=%d reproduces the kill moments); uninterrupted run %.1f s" killSeed killSeed (ms / 1000.0)
            let dir = Path.Combine(Path.GetDirectoryName expected, "killed")
            let mutable kills = 0
            let mutable attempts = 0
            let mutable finished = false
            let mutable ranBeforeKill = []
            let mutable resumes = 0
            // three kills, then run to the end. The first at a random moment (5-50 % of an uninterrupted
            // run: startup, data loading, training or writing). The others at a random moment (0-400 ms)
            // after this process writes a checkpoint, so that a resume from a checkpoint is exercised,
            // not only a rerun from scratch
            let checkpointWritten (since: DateTime) =
                let artifacts = dir + "-artifacts"
                try
                    Directory.Exists artifacts
                    && Directory.GetDirectories(artifacts) |> Array.exists (fun run ->
                        let cp = Path.Combine(run, "checkpoint")
                        Directory.Exists cp && Directory.GetFiles cp |> Array.exists (fun f -> File.GetLastWriteTimeUtc f > since))
                with :? IOException -> false // a checkpoint deleted while we look: the run just finished
            while not finished && attempts < 3 do
                attempts <- attempts + 1
                let started = DateTime.UtcNow
                use c = new Child([ "run"; tinySpec; "--results"; dir ])
                let delay, afterCheckpoint =
                    if attempts = 1 then int (ms * (0.05 + 0.45 * rng.NextDouble())), false
                    else rng.Next 400, true
                let mutable alive = true
                if afterCheckpoint then
                    while alive && not (checkpointWritten started) do
                        alive <- not (c.Wait 20)
                if not alive || c.Wait delay then
                    finished <- true
                    Expect.equal c.ExitCode 0 (sprintf "run finished before its kill:\n%s" c.Output)
                else
                    c.Kill()
                    kills <- kills + 1
                    ranBeforeKill <- ranBeforeKill @ [ (if afterCheckpoint then sprintf "%d ms after a checkpoint" delay else sprintf "%d ms" delay), (runLines c.Output).Length ]
                    resumes <- resumes + (c.Output.Split('\n') |> Array.filter (fun l -> l.Contains "resumed from the checkpoint")).Length
            printfn "kill-resume: %d kill(s) at %A (runs started before each kill: %A)" kills (ranBeforeKill |> List.map fst) (ranBeforeKill |> List.map snd)
            let code, output = runToEnd [ "run"; tinySpec; "--results"; dir ]
            Expect.equal code 0 (sprintf "the final restart completes:\n%s" output)
            resumes <- resumes + (output.Split('\n') |> Array.filter (fun l -> l.Contains "resumed from the checkpoint")).Length
            printfn "kill-resume: %d run(s) completed after resuming from a checkpoint (a resumed run killed again is not counted)" resumes
            Expect.isGreaterThanOrEqual kills 1 "at least one run was killed"
            expectSameResults expected dir "after kills"
        }

        test "results that differ from the uninterrupted run only by float noise pass, a lost step does not" {
            let expected, _, _ = baseline.Force()
            let root = Path.GetDirectoryName expected
            let copyOf (name: string) (weightScale: float) =
                let dir = Path.Combine(root, name)
                for suffix in [ ""; "-artifacts" ] do
                    for f in filesUnder (expected + suffix) do
                        let target = Path.Combine(dir + suffix, f)
                        Directory.CreateDirectory(Path.GetDirectoryName target) |> ignore
                        File.Copy(Path.Combine(expected + suffix, f), target)
                // every pretrained weight moved by weightScale of its tensor's largest magnitude
                let model = filesUnder (dir + "-artifacts") |> Array.find (fun f -> f.EndsWith "model.safetensors")
                let path = Path.Combine(dir + "-artifacts", model)
                let moved =
                    Safetensors.Load path |> Seq.map (fun kv ->
                        use m = kv.Value.abs().max()
                        Collections.Generic.KeyValuePair(kv.Key, kv.Value + m * weightScale)) |> Seq.toList
                Safetensors.Save(path, moved)
                dir
            let noisy = copyOf "noisy" 1e-7
            expectSameResults expected noisy "float noise"
            let lost = copyOf "lost-step" 1e-2
            Expect.throwsT<AssertException> (fun () -> expectSameResults expected lost "a lost step") "weights 1e-2 away fail"
        }

        test "two runners on one results folder run each job once and agree with the uninterrupted run" {
            let expected, _, hashes = baseline.Force()
            let dir = Path.Combine(Path.GetDirectoryName expected, "shared")
            use a = new Child([ "run"; tinySpec; "--results"; dir ])
            use b = new Child([ "run"; tinySpec; "--results"; dir ])
            Expect.isTrue (a.Wait 300_000 && b.Wait 300_000) "both runners end"
            let ran = Array.append (runLines a.Output) (runLines b.Output) |> Array.countBy id |> Map.ofArray
            for h in hashes do
                Expect.equal (Map.tryFind h ran) (Some 1) (sprintf "run %s ran exactly once:\nA:\n%s\nB:\n%s" h a.Output b.Output)
            Expect.equal ran.Count hashes.Length "no other run"
            // (a runner that found a job claimed, or its base unfinished, may end with blocked runs and
            // exit 1: the other one ran them)
            expectSameResults expected dir "two runners"
        }
    ]

// ---------------------------------------------------------------------------------------------
// Bad specs and I/O failures.

let private dispatch (args: string list) =
    use out = new StringWriter()
    use err = new StringWriter()
    let code = Commands.Dispatch(Array.ofList args, (fun () -> TrainingExecutor() :> IRunExecutor), out, err)
    code, out.ToString(), err.ToString()

/// tests/fixtures/bad-specs/NAME.yaml with NAME.expect: first line LINE:COLUMN, second a fragment of the message.
let private badSpecs =
    let dir = fixture "bad-specs"
    testList "bad specs" [
        test "the corpus has at least 15 bad specs, each with an .expect file" {
            let specs = Directory.GetFiles(dir, "*.yaml")
            Expect.isGreaterThanOrEqual specs.Length 15 "at least 15 bad specs"
            for s in specs do Expect.isTrue (File.Exists(Path.ChangeExtension(s, ".expect"))) (s + " has an .expect file")
        }
        for spec in Directory.GetFiles(dir, "*.yaml") |> Array.sort do
            test (Path.GetFileNameWithoutExtension spec) {
                let expect = File.ReadAllLines(Path.ChangeExtension(spec, ".expect"))
                let location, fragment = expect.[0].Trim(), expect.[1].Trim()
                let code, out, err = dispatch [ "validate"; spec ]
                Expect.equal code 2 (sprintf "exit code 2 for a bad spec (stdout: %s)" out)
                let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                let hit = lines |> Array.tryFind (fun l -> l.Contains fragment)
                match hit with
                | None -> failtestf "no error line says '%s':\n%s" fragment err
                | Some line ->
                    Expect.stringStarts line (sprintf "%s:%s: " spec location) (sprintf "the error is located at %s" location)
            }
    ]

let private ioFailures =
    testSequenced <| testList "I/O failures" [
        test "a results folder that cannot be created: one clear line, exit 1" {
            use dir = new TempDir()
            let file = dir.File "a-file"
            File.WriteAllText(file, "not a folder")
            let results = Path.Combine(file, "results") // under a regular file: no one can create it, not even root
            let code, _, err = dispatch [ "run"; tinySpec; "--results"; results ]
            Expect.equal code 1 "exit code 1"
            let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 1 (sprintf "one line:\n%s" err)
            Expect.stringStarts lines.[0] "lora: " "prefixed by the program's name"
            Expect.stringContains lines.[0] file "names the path"
        }
        test "an artifacts folder that cannot be written stops the run and leaves earlier results intact" {
            let expected, _, _ = baseline.Force()
            use dir = new TempDir()
            let results = dir.File "results"
            for f in filesUnder expected do
                Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(results, f))) |> ignore
                File.Copy(Path.Combine(expected, f), Path.Combine(results, f))
            // one tune is pending again; its artifacts folder cannot be made (results-artifacts is a file)
            let pending = Directory.GetDirectories results |> Array.sort |> Array.last
            File.Delete(Path.Combine(pending, ResultsStore.MetricsFile))
            File.WriteAllText(results + "-artifacts", "not a folder")
            let before = filesUnder results |> Array.map (fun f -> f, File.ReadAllBytes(Path.Combine(results, f)))
            let code, _, err = dispatch [ "run"; tinySpec; "--results"; results ]
            Expect.equal code 1 "exit code 1"
            let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 1 (sprintf "one line:\n%s" err)
            Expect.stringStarts lines.[0] "lora: " "prefixed by the program's name"
            let after = filesUnder results |> Array.filter (fun f -> not (f.EndsWith ResultsStore.LockFile)) |> Array.map (fun f -> f, File.ReadAllBytes(Path.Combine(results, f)))
            Expect.equal (after |> Array.map fst) (before |> Array.map fst) "no result added or removed"
            for (f, b), (_, a) in Array.zip before after do Expect.isTrue (a = b) (f + " unchanged")
        }
        test "a missing weights file for a weights: base model: one located line, exit 2, results intact" {
            use dir = new TempDir()
            let results = dir.File "results"
            let earlier = Path.Combine(results, "0123456789ab", ResultsStore.MetricsFile)
            Directory.CreateDirectory(Path.GetDirectoryName earlier) |> ignore
            File.WriteAllText(earlier, "{\"hash\": \"0123456789ab\"}\n")
            let spec = fixture "bad-specs/missing-weights-file.yaml"
            let code, _, err = dispatch [ "run"; spec; "--results"; results ]
            Expect.equal code 2 "exit code 2"
            let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 1 (sprintf "one line:\n%s" err)
            Expect.stringContains lines.[0] "weights file not found at 'no/such/weights.safetensors'" "says which file is missing"
            Expect.stringStarts lines.[0] (spec + ":3:") "located in the spec"
            Expect.equal (File.ReadAllText earlier) "{\"hash\": \"0123456789ab\"}\n" "the earlier result is intact"
            Expect.sequenceEqual (filesUnder results) [| Path.Combine("0123456789ab", ResultsStore.MetricsFile) |] "nothing else written"
        }
    ]

let tests =
    testList "Reliability" [
        fuzzRegressions
        claims
        badSpecs
        ioFailures
        floatNoiseTests
        crashSafety
    ]
