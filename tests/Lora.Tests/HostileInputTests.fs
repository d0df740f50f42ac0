/// Hostile results folders, adapters, specs and data (docs/reliability.md, "Hostile input"): one
/// test per class of failure, each with inputs made here.
module Lora.Tests.HostileInputTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Lora.Core.IO
open Lora.Runner
open Lora.Tests.Generators
open Lora.Tests.RunnerTests

let private dispatchWith (ex: IRunExecutor) (args: string list) =
    use out = new StringWriter()
    use err = new StringWriter()
    let code = Commands.Dispatch(List.toArray args, (fun () -> ex), out, err)
    code, out.ToString(), err.ToString()

/// The quickstart spec's first run (the pretraining every tune depends on).
let private firstHash spec results =
    (planJson spec results |> List.head).["hash"].GetValue<string>()

let private precious = "precious bytes\n"

// ---------------------------------------------------------------------------------------------
// (a) writes stay inside the results and output folders

let private writesInside =
    testList "writes stay inside" [
        test "a run.lock that is a link to a file elsewhere: the run is refused and the file is untouched" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let hash = firstHash spec results
            let outside = dir.File "outside.txt"
            File.WriteAllText(outside, precious)
            Directory.CreateDirectory(Path.Combine(results, hash)) |> ignore
            File.CreateSymbolicLink(Path.Combine(results, hash, ResultsStore.LockFile), outside) |> ignore
            let code, _, err = dispatchWith (FakeExecutor()) [ "run"; spec; "--results"; results ]
            Expect.equal code 1 "exit 1"
            Expect.stringContains err "symbolic link" "says why"
            Expect.equal (File.ReadAllText outside) precious "the linked file is unchanged"
        }
        test "an artifacts log.txt that is a link: refused, the linked file is untouched" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let hash = firstHash spec results
            let outside = dir.File "outside.txt"
            File.WriteAllText(outside, precious)
            let artifacts = Path.Combine(results + "-artifacts", hash)
            Directory.CreateDirectory artifacts |> ignore
            File.CreateSymbolicLink(Path.Combine(artifacts, ResultsStore.LogFile), outside) |> ignore
            let code, _, err = dispatchWith (FakeExecutor()) [ "run"; spec; "--results"; results ]
            Expect.equal code 1 "exit 1"
            Expect.stringContains err "symbolic link" "says why"
            Expect.equal (File.ReadAllText outside) precious "the linked file is unchanged"
        }
        test "a run folder that is a link to a folder elsewhere: nothing is written there" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let hash = firstHash spec results
            let elsewhere = Directory.CreateDirectory(dir.File "elsewhere").FullName
            Directory.CreateDirectory results |> ignore
            Directory.CreateSymbolicLink(Path.Combine(results, hash), elsewhere) |> ignore
            let code, _, err = dispatchWith (FakeExecutor()) [ "run"; spec; "--results"; results ]
            Expect.equal code 1 "exit 1"
            Expect.stringContains err "symbolic link" "says why"
            Expect.isEmpty (Directory.GetFileSystemEntries elsewhere) "nothing written through the link"
        }
        test "a lock file a killed runner left is reused, not truncated through, and removed afterwards" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let hash = firstHash spec results
            Directory.CreateDirectory(Path.Combine(results, hash)) |> ignore
            File.WriteAllText(Path.Combine(results, hash, ResultsStore.LockFile), "1234@gone\n")
            let code, out, err = dispatchWith (FakeExecutor()) [ "run"; spec; "--results"; results ]
            Expect.equal code 0 (out + err)
            Expect.isTrue (File.Exists(Path.Combine(results, hash, ResultsStore.MetricsFile))) "the run ran"
            Expect.isFalse (File.Exists(Path.Combine(results, hash, ResultsStore.LockFile))) "no lock left"
        }
        test "SafePath refuses paths outside the root and links on the way" {
            use dir = new TempDir()
            let root = Directory.CreateDirectory(dir.File "root").FullName
            Expect.throwsT<IOException> (fun () -> SafePath.Inside(root, Path.Combine(root, "..", "x")) |> ignore) "outside by .."
            Expect.throwsT<IOException> (fun () -> SafePath.Inside(root, "/etc/passwd") |> ignore) "outside by an absolute path"
            Directory.CreateSymbolicLink(Path.Combine(root, "sub"), dir.Path) |> ignore
            Expect.throwsT<IOException> (fun () -> SafePath.Inside(root, Path.Combine(root, "sub", "f")) |> ignore) "a linked folder"
            Expect.equal (SafePath.Inside(root, Path.Combine(root, "a", "b"))) (Path.Combine(root, "a", "b")) "an ordinary path"
        }
        test "lora tables: experiment names from metrics.json cannot leave --out, control characters are escaped" {
            use dir = new TempDir()
            let results = dir.File "results"
            let out = dir.File "tables"
            let write hash (experiment: string) (name: string) =
                let o = JsonObject()
                o.["hash"] <- JsonValue.Create(hash: string)
                let labels = JsonObject()
                labels.["kind"] <- JsonValue.Create "tuning"
                labels.["experiment"] <- JsonValue.Create experiment
                labels.["name"] <- JsonValue.Create name
                labels.["method"] <- JsonValue.Create "lora"
                for k in [ "model"; "zoo"; "dataset"; "task" ] do labels.[k] <- JsonValue.Create "x"
                labels.["rank"] <- JsonValue.Create 4
                labels.["seed"] <- JsonValue.Create 0
                o.["labels"] <- labels
                o.["id"] <- JsonValue.Create(experiment + "/" + name)
                o.["metrics"] <- JsonObject()
                o.["params"] <- JsonNode.Parse """{"total": 10, "trainable": 1}"""
                o.["timings"] <- JsonNode.Parse """{"train_seconds": 1.0}"""
                let curve = JsonArray()
                let p = JsonObject()
                p.["epoch"] <- JsonValue.Create 1
                p.["step"] <- JsonValue.Create 10
                p.["train_loss"] <- JsonValue.Create 1.0
                p.["val_metric"] <- JsonValue.Create 0.5
                curve.Add p
                o.["curve"] <- curve
                Directory.CreateDirectory(Path.Combine(results, hash)) |> ignore
                File.WriteAllText(Path.Combine(results, hash, ResultsStore.MetricsFile), o.ToJsonString())
            write "aaaaaaaaaaaa" "../../outside/x" "lora-r4"
            write "bbbbbbbbbbbb" "/tmp/absolute" "lora-r8"
            write "cccccccccccc" "nul\u0000and\u001b[31mred" "r\u001b]0;title\u0007"
            let code, _, err = runLora [ "tables"; "--results"; results; "--out"; out ]
            Expect.equal (code, err) (0, "") "tables succeed"
            let everything = Directory.GetFiles(dir.Path, "*", SearchOption.AllDirectories)
            for f in everything do
                Expect.isTrue (f.StartsWith(results + "/") || f.StartsWith(out + "/")) $"{f} is inside --results or --out"
            for f in Directory.GetFiles(out, "*.md") do
                let text = File.ReadAllText f
                Expect.isFalse (text.Contains '\u001b' || text.Contains '\u0000' || text.Contains '\u0007') $"{f} holds no raw control character"
            Expect.isTrue (Directory.GetFiles(out, "*.md") |> Array.exists (fun f -> File.ReadAllText(f).Contains "\\u001b")) "the escape is shown, escaped"
        }
        test "a spec name with NUL or a terminal escape is a located error" {
            use dir = new TempDir()
            for name, shown in [ "bad\\0name", "\\u0000"; "bad\\e[31mname", "\\u001b" ] do
                let spec = dir.File "spec.yaml"
                File.WriteAllText(spec, $"experiments:\n  - name: \"{name}\"\n    model: {{ zoo: vit }}\n    dataset: {{ source: fashion_mnist, path: \"{dir.Path}\" }}\n    methods: [ head ]\n")
                let code, _, err = runLora [ "validate"; spec ]
                Expect.equal code 2 $"{name}: exit 2"
                Expect.stringContains err (spec + ":2:") $"{name}: located"
                Expect.stringContains err "control character" $"{name}: says why"
                Expect.stringContains err shown $"{name}: shown escaped"
                Expect.isFalse (err.Contains '\u001b' || err.Contains '\u0000') $"{name}: never echoed raw"
        }
    ]

// ---------------------------------------------------------------------------------------------
// (b) no false success, no lost work

/// FakeExecutor's results, with a NaN validation loss for the runs named.
type private NanExecutor(nanFor: string) =
    let inner = FakeExecutor() :> IRunExecutor
    interface IRunExecutor with
        member _.Execute(run, ctx, ct) =
            let r = inner.Execute(run, ctx, ct)
            if run.Id <> nanFor then r
            else RunResult(Metrics = r.Metrics, Curve = [| CurvePoint(1, 10L, 0.5, Nullable Double.NaN, Nullable 0.3) |],
                           TotalParams = r.TotalParams, TrainableParams = r.TrainableParams, TrainSeconds = r.TrainSeconds)

let private noFalseSuccess =
    testList "no false success" [
        test "a NaN validation loss fails that run with a recorded reason; the plan goes on; exit 1" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let runs = planJson spec results
            let victim = runs.[1].["name"].GetValue<string>()
            let hash = runs.[1].["hash"].GetValue<string>()
            let code, out, _ = dispatchWith (NanExecutor victim) [ "run"; spec; "--results"; results ]
            Expect.equal code 1 "exit 1"
            Expect.isFalse (File.Exists(Path.Combine(results, hash, ResultsStore.MetricsFile))) "no metrics.json for it"
            let failed = File.ReadAllText(Path.Combine(results + "-artifacts", hash, ResultsStore.FailedFile))
            Expect.stringContains failed "validation loss is NaN" "failed.txt explains"
            let done' = runs |> List.filter (fun r -> File.Exists(Path.Combine(results, r.["hash"].GetValue<string>(), ResultsStore.MetricsFile)))
            Expect.equal done'.Length (runs.Length - 1) $"every other run finished:\n{out}"
        }
        test "a claim that fails with an I/O error is not 'another runner': it throws with the OS's reason" {
            use dir = new TempDir()
            let store = ResultsStore(dir.File "results")
            Directory.CreateDirectory store.Root |> ignore
            File.WriteAllText(store.ResultDir "0123456789ab", "a file where the run folder goes")
            Expect.throwsT<IOException> (fun () -> store.TryClaim "0123456789ab" |> ignore) "an I/O error propagates"
            // contention still reads as contention
            use held = store.TryClaim "abcdefabcdef"
            Expect.isNotNull held "first claim"
            Expect.isNull (store.TryClaim "abcdefabcdef") "a held lock is 'someone else'"
            Expect.isTrue (store.IsClaimed "abcdefabcdef") "and IsClaimed says so"
        }
        test "lora run on a results folder that breaks while claiming: exit 1, the reason, nothing half-written" {
            use dir = new TempDir()
            let spec = quickstartIn dir
            let results = dir.File "results"
            let hash = firstHash spec results
            Directory.CreateDirectory results |> ignore
            File.WriteAllText(Path.Combine(results, hash), "not a folder")
            let code, out, err = dispatchWith (FakeExecutor()) [ "run"; spec; "--results"; results ]
            Expect.equal code 1 "exit 1"
            Expect.isFalse (out.Contains "another runner") "not read as contention"
            Expect.stringStarts err "lora: " "one line with the reason"
            Expect.isEmpty (Directory.GetFiles(results, "*.tmp*", SearchOption.AllDirectories)) "no temporary file"
        }
    ]

/// A copy of the fixture adapter with one tensor replaced.
let private adapterWith (dir: TempDir) (name: string) (edit: Collections.Generic.Dictionary<string, torch.Tensor> -> unit) =
    let folder = Directory.CreateDirectory(dir.File name).FullName
    File.Copy(fixture "peft_lora_vit_tiny/adapter_config.json", Path.Combine(folder, "adapter_config.json"))
    let tensors = Safetensors.Load(fixture "peft_lora_vit_tiny/adapter_model.safetensors")
    edit tensors
    Safetensors.Save(Path.Combine(folder, "adapter_model.safetensors"), tensors)
    folder

let private mergeArgs adapter out =
    [ "merge"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; fixture "vit_tiny_p4_32.safetensors"; "--adapter"; adapter; "--out"; out ]

let private refusedNumbers =
    testList "refused numbers" [
        test "merge refuses int8 and bool adapter tensors, naming the tensor" {
            use dir = new TempDir()
            for dtype in [ torch.ScalarType.Int8; torch.ScalarType.Bool ] do
                let mutable key = ""
                let adapter = adapterWith dir (string dtype) (fun t ->
                    key <- t.Keys |> Seq.find (fun k -> k.Contains "lora_B")
                    t.[key] <- t.[key].to_type dtype)
                let out = dir.File "merged.safetensors"
                let code, _, err = runLora (mergeArgs adapter out)
                Expect.equal code 1 $"{dtype}: exit 1"
                Expect.stringContains err key $"{dtype}: names the tensor"
                Expect.stringContains err "floating point" $"{dtype}: says why"
                Expect.isFalse (File.Exists out) $"{dtype}: nothing written"
        }
        test "merge refuses to write NaN or infinite merged weights, naming the tensor" {
            use dir = new TempDir()
            let nan = adapterWith dir "nan" (fun t ->
                let key = t.Keys |> Seq.find (fun k -> k.Contains "lora_B")
                t.[key] <- t.[key].fill_(Double.NaN))
            let fill = adapterWith dir "ones" (fun t -> for k in List.ofSeq t.Keys do t.[k] <- t.[k].fill_(1.0))
            let cfgOnes = Path.Combine(fill, "adapter_config.json")
            File.WriteAllText(cfgOnes, File.ReadAllText(cfgOnes).Replace("\"lora_alpha\": 8", "\"lora_alpha\": 1e308"))
            for name, adapter in [ "NaN lora_B", nan; "lora_alpha 1e308", fill ] do
                let out = dir.File "merged.safetensors"
                let code, _, err = runLora (mergeArgs adapter out)
                Expect.equal code 1 $"{name}: exit 1 ({err})"
                Expect.stringContains err "NaN or infinite" $"{name}: says why"
                Expect.stringContains err "tensor '" $"{name}: names the tensor"
                Expect.isFalse (File.Exists out) $"{name}: nothing written"
        }
        test "predict refuses NaN scores" {
            use dir = new TempDir()
            let weights = dir.File "nan.safetensors"
            let tensors = Safetensors.Load(fixture "vit_tiny_p4_32.safetensors")
            let key = tensors.Keys |> Seq.find (fun k -> k.StartsWith "head.")
            tensors.[key] <- tensors.[key].fill_(Double.NaN)
            Safetensors.Save(weights, tensors)
            let img = dir.File "img.png"
            Lora.Core.Data.Png.Write(img, ReadOnlySpan(Array.create (3 * 32 * 32) 128uy), 3, 32, 32)
            let code, out, err = runLora [ "predict"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; weights; img ]
            Expect.equal code 1 "exit 1"
            Expect.stringContains err "NaN or infinite" "says why"
            Expect.equal out "" "no prediction printed"
        }
    ]

// ---------------------------------------------------------------------------------------------
// (c) no hangs, no unbounded memory

/// A PNG whose header claims width × height (the pixel data is a 2×2 image's).
let private lyingPng (width: int) (height: int) =
    let png = Lora.Core.Data.Png.Encode(ReadOnlySpan(Array.create 12 7uy), 3, 2, 2)
    let be (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]
    (be width).CopyTo(png, 16)
    (be height).CopyTo(png, 20)
    let crc (bytes: byte[]) =
        let mutable c = 0xFFFFFFFFu
        for b in bytes do
            c <- c ^^^ uint32 b
            for _ in 1 .. 8 do c <- if c &&& 1u <> 0u then 0xEDB88320u ^^^ (c >>> 1) else c >>> 1
        ~~~c
    (be (int (crc png.[12..28]))).CopyTo(png, 29)
    png

let private mkfifo (path: string) =
    use p = Diagnostics.Process.Start("mkfifo", path)
    p.WaitForExit()
    Expect.equal p.ExitCode 0 "mkfifo"

let private bounded =
    testList "bounded" [
        test "a catastrophically backtracking target pattern returns (non-backtracking engine); backreferences still work" {
            let path = String('a', 40) + "!"
            Expect.isFalse (Lora.Core.Tuning.ModulePattern.Matches("re:(a+)+$", path)) "(a+)+$ on 40 a's and a '!' returns, no match"
            Expect.isTrue (Lora.Core.Tuning.ModulePattern.Matches(@"re:(blocks)\.\d+\.\1?attn", "blocks.3.attn")) "a backreference falls back to the timed engine"
        }
        test "adapter sizes are bounded by the model's dimensions before anything is allocated" {
            let before = GC.GetTotalAllocatedBytes true
            Expect.throwsT<ArgumentException> (fun () -> new Lora.Core.Tuning.BottleneckAdapter(64L, width = 1048576L) |> ignore) "adapter_width 1048576 on 64"
            Expect.throwsT<ArgumentException> (fun () -> new Lora.Core.Tuning.BottleneckAdapter(64L, 20000.0) |> ignore) "adapter_ratio 20000"
            Expect.throwsT<ArgumentException> (fun () -> new Lora.Core.Tuning.BottleneckAdapter(64L, 1e300) |> ignore) "adapter_ratio 1e300"
            let lora = new Lora.Core.Tuning.LoraLinear(torch.nn.Linear(8L, 6L))
            Expect.throwsT<ArgumentException> (fun () -> lora.AddAdapter("default", Lora.Core.Tuning.LoraOptions(1048576, 8.0))) "rank 1048576 on Linear(8, 6)"
            Expect.isLessThan (GC.GetTotalAllocatedBytes true - before) (64L * 1024L * 1024L) "under 64 MiB allocated"
        }
        test "merge with an adapter config claiming r = 1048576: a one-line error, not gigabytes" {
            use dir = new TempDir()
            let adapter = adapterWith dir "huge-r" ignore
            let cfg = Path.Combine(adapter, "adapter_config.json")
            File.WriteAllText(cfg, Text.RegularExpressions.Regex.Replace(File.ReadAllText cfg, "\"r\": \\d+", "\"r\": 1048576"))
            let code, _, err = runLora (mergeArgs adapter (dir.File "m.safetensors"))
            Expect.equal code 1 "exit 1"
            Expect.stringContains err "rank 1048576" err
            Expect.stringContains err "exceeds" err
        }
        test "a grid of 20,000 runs is refused with its count, before expanding" {
            use dir = new TempDir()
            let spec = dir.File "grid.yaml"
            let ranks = String.Join(", ", [ 1 .. 100 ])
            let seeds = String.Join(", ", [ 1 .. 100 ])
            File.WriteAllText(spec, $"experiments:\n  - name: big\n    model: {{ zoo: vit }}\n    dataset: {{ source: fashion_mnist, path: \"{dir.Path}\" }}\n    methods: [ lora, dora ]\n    ranks: [ {ranks} ]\n    seeds: [ {seeds} ]\n")
            let code, _, err = runLora [ "validate"; spec ]
            Expect.equal code 2 "exit 2"
            Expect.stringContains err "20000 runs" "the count"
        }
        test "an image whose header claims 10000x10000 is refused from the header" {
            use dir = new TempDir()
            let path = dir.File "huge.png"
            File.WriteAllBytes(path, lyingPng 10000 10000)
            let e = Expect.throwsC (fun () -> Lora.Core.Data.ImageFile.Read(path, 3) |> ignore) id
            Expect.isTrue (e :? InvalidDataException) $"InvalidDataException, got {e.GetType().Name}"
            Expect.stringContains e.Message "10000x10000" "names the size"
        }
        test "non-regular and oversized inputs are refused before reading: /dev/zero, a FIFO, a huge file" {
            use dir = new TempDir()
            let fifo = dir.File "fifo"
            mkfifo fifo
            let huge = dir.File "huge.txt"
            do use f = File.Create huge in f.SetLength(InputFile.MaxTextBytes + 1L) // sparse
            for path, kind in [ "/dev/zero", "character device"; fifo, "FIFO" ] do
                let e = Expect.throwsC (fun () -> InputFile.Check(path, InputFile.MaxTextBytes, "spec") |> ignore) id
                Expect.stringContains e.Message kind $"{path}: says what it is"
            Expect.throwsT<InvalidDataException> (fun () -> InputFile.Check(huge, InputFile.MaxTextBytes, "labels file") |> ignore) "over the limit"
            // through the commands: a spec, an image, labels, an adapter config
            let code, _, err = runLora [ "validate"; "/dev/zero" ]
            Expect.equal code 2 "validate /dev/zero: exit 2"
            Expect.stringContains err "character device" "validate /dev/zero: says why"
            let code, _, err = runLora [ "predict"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; fixture "vit_tiny_p4_32.safetensors"; fifo ]
            Expect.equal code 1 $"predict on a FIFO: exit 1 ({err})"
            Expect.stringContains err "FIFO" "predict on a FIFO: says why"
            let code, _, err = runLora [ "predict"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; fixture "vit_tiny_p4_32.safetensors"; "--labels"; huge; "/dev/zero" ]
            Expect.equal code 1 "huge labels: exit 1"
            Expect.stringContains err "labels file" "huge labels: says which"
            let adapter = Directory.CreateDirectory(dir.File "adapter").FullName
            mkfifo (Path.Combine(adapter, "adapter_config.json"))
            let code, _, err = runLora (mergeArgs adapter (dir.File "m.safetensors"))
            Expect.equal code 1 "merge with a FIFO config: exit 1"
            Expect.stringContains err "FIFO" "merge with a FIFO config: says why"
        }
        test "a weights file with an extra 1 GiB tensor is refused from its header, without reading it" {
            use dir = new TempDir()
            let path = dir.File "extra.safetensors"
            let tensors = Safetensors.Load(fixture "vit_tiny_p4_32.safetensors")
            tensors.["junk"] <- torch.zeros(1L)
            Safetensors.Save(path, tensors, readOnlyDict [ "room", String('x', 64) ])
            // widen junk to 1 GiB in the header (and the file, sparsely) after the fact
            let bytes = File.ReadAllBytes path
            let n = int (BitConverter.ToUInt64(bytes, 0))
            let header = Text.Encoding.UTF8.GetString(bytes, 8, n)
            let node = JsonNode.Parse(header).AsObject()
            node.Remove "__metadata__" |> ignore
            let junk = node.["junk"].AsObject()
            let begin' = junk.["data_offsets"].[0].GetValue<int64>()
            let gib = 1L <<< 30
            if begin' + 4L <> int64 (bytes.Length - 8 - n) then failtest "junk is not the last tensor"
            junk.["shape"] <- JsonArray(JsonValue.Create(gib / 4L))
            junk.["data_offsets"] <- JsonArray(JsonValue.Create begin', JsonValue.Create(begin' + gib))
            let newHeader = Text.Encoding.UTF8.GetBytes(node.ToJsonString().PadRight(n))
            Expect.equal newHeader.Length n "header kept its length"
            do
                use f = new FileStream(path, FileMode.Open)
                f.Position <- 8L
                f.Write(newHeader, 0, n)
                f.SetLength(8L + int64 n + begin' + gib)
            use model = Lora.Core.Models.Zoo.Create("vit", Lora.Core.Models.ModelArgs.FromFile(fixture "vit_tiny_p4_32.json"))
            let before = GC.GetTotalAllocatedBytes true
            let e = Expect.throwsC (fun () -> StateDict.Load(model, path, strict = true) |> ignore) id
            Expect.stringContains e.Message "unexpected key" "decided from the header"
            Expect.isLessThan (GC.GetTotalAllocatedBytes true - before) (256L * 1024L * 1024L) "the 1 GiB tensor was never read"
        }
    ]

// ---------------------------------------------------------------------------------------------
// (d) messages for people

let private messages =
    testList "messages" [
        test "sizes are refused by validate: image_size, batch, adapter ratio, val_fraction 0 on an image folder" {
            use dir = new TempDir()
            let images = Directory.CreateDirectory(dir.File "images").FullName
            for field, value, expected in
                [ "image_size", "1000000", "image_size 1000000 is more than"
                  "batch", "2000000000", "batch 2000000000 is more than" ] do
                let spec = dir.File "spec.yaml"
                File.WriteAllText(spec, $"experiments:\n  - name: e\n    model: {{ zoo: vit }}\n    dataset: {{ source: fashion_mnist, path: \"{dir.Path}\" }}\n    methods: [ head ]\n    {field}: {value}\n")
                let code, _, err = runLora [ "validate"; spec ]
                Expect.equal code 2 $"{field}: exit 2"
                Expect.stringContains err expected $"{field}: says why"
                Expect.stringContains err (spec + ":6:") $"{field}: located"
            let spec = dir.File "spec.yaml"
            File.WriteAllText(spec, $"experiments:\n  - name: e\n    model: {{ zoo: vit }}\n    dataset: {{ source: image_folder, path: \"{images}\", val_fraction: 0 }}\n    methods: [ head, {{ adapter: {{ ratio: 20000 }} }} ]\n")
            let code, _, err = runLora [ "validate"; spec ]
            Expect.equal code 2 "exit 2"
            Expect.stringContains err "val_fraction 0 leaves no validation images" "val_fraction"
            Expect.stringContains err "ratio must be at most 4" "adapter ratio"
        }
        test "an empty validation split says why" {
            let e = Expect.throwsC (fun () -> Lora.Core.Data.Seeded.SplitIndices(3, 0.1, 0) |> ignore) id
            Expect.stringContains e.Message "leaves no validation item" "explained"
        }
        test "a spec path that is a folder says so" {
            use dir = new TempDir()
            let code, _, err = runLora [ "validate"; dir.Path ]
            Expect.equal code 2 "exit 2"
            Expect.stringContains err "is a folder" "says so"
        }
        test "a truncated PNG names the problem; an image folder's bad image is not wrapped in AggregateException" {
            use dir = new TempDir()
            let good = Lora.Core.Data.Png.Encode(ReadOnlySpan(Array.create (3 * 16 * 16) 9uy), 3, 16, 16)
            let cls = Directory.CreateDirectory(dir.File "root/cat").FullName
            for i in 0 .. 7 do File.WriteAllBytes(Path.Combine(cls, $"{i}.png"), good)
            File.WriteAllBytes(Path.Combine(cls, "broken.png"), good.[.. good.Length / 2])
            let e = Expect.throwsC (fun () -> Lora.Core.Data.ImageFolder.Load(dir.File "root", 8) |> ignore) id
            Expect.isTrue (e :? InvalidDataException) $"InvalidDataException, got {e.GetType().Name}: {e.Message}"
            Expect.stringContains e.Message "broken.png" "names the file"
            Expect.isFalse (e.Message.Contains "(   )" || e.Message.Contains "One or more errors") $"a message for people: {e.Message}"
        }
        test "a native error is one line without libtorch's stack trace" {
            let native = Runtime.InteropServices.ExternalException("invalid argument: sizes [1000000, 3] too large\nException raised from empty_cpu at aten/src/ATen/Empty.cpp:10 (most recent call first):\nframe #0: c10::Error::Error(...) + 0x1\nframe #1: at::empty + 0x2")
            let line = Lora.Core.Training.NativeError.Summary(AggregateException(native))
            Expect.equal line "libtorch: invalid argument: sizes [1000000, 3] too large" "first line only, unwrapped"
        }
    ]

// ---------------------------------------------------------------------------------------------
// (f) an .fsx spec is code

let private trustedCode =
    testList "trusted code" [
        test "validate and plan on an .fsx say that they run the script" {
            use dir = new TempDir()
            let spec = dir.File "spec.fsx"
            File.WriteAllText(spec, "42\n")
            for command in [ "validate"; "plan" ] do
                let _, _, err = runLora [ command; spec ]
                Expect.stringContains err "is an F# script" $"{command}: says it"
                Expect.stringContains err "runs its code" $"{command}: says it runs"
        }
    ]

let tests =
    testSequenced <| testList "HostileInput" [
        writesInside
        noFalseSuccess
        refusedNumbers
        bounded
        messages
        trustedCode
    ]
