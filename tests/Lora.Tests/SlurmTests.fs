module Lora.Tests.SlurmTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open FsCheck
open Lora.Runner
open Lora.Runner.Slurm
open Lora.Tests.Generators

/// Stands in for sbatch/squeue/sacct: records every call; sbatch hands out job ids 101, 102, ...;
/// squeue and sacct answer whatever the test set.
type FakeSlurm() =
    let calls = ResizeArray<string * string list>()
    let mutable nextJob = 100
    member val Squeue = CommandResult(0, "", "") with get, set
    member val Sacct = CommandResult(1, "", "sacct: error: Slurm accounting storage is disabled") with get, set
    member val Sbatch : (unit -> CommandResult) option = None with get, set
    member _.Calls = calls |> List.ofSeq
    member _.SbatchCalls = calls |> Seq.filter (fun (p, _) -> p = "sbatch") |> Seq.map snd |> List.ofSeq
    interface ICommandRunner with
        member this.Run(program, args) =
            calls.Add(program, List.ofSeq args)
            match program with
            | "sbatch" ->
                match this.Sbatch with
                | Some f -> f ()
                | None ->
                    nextJob <- nextJob + 1
                    CommandResult(0, sprintf "%d;loratest\n" nextJob, "")
            | "squeue" -> this.Squeue
            | "sacct" -> this.Sacct
            | _ -> CommandResult(127, "", program + ": not found", false)

let private run hash name (deps: string list) = SlurmRun(hash, name, deps)

/// A pretraining and two tunes of it: the shape of every plan with a base model trained in the plan.
let private pretrain = run "p0" "pretrain fmnist 0-4" []
let private tune1 = run "t1" "lora r4" [ "p0" ]
let private tune2 = run "t2" "lora r8" [ "p0" ]
let private plan = [ pretrain; tune1; tune2 ]

let private levelsOf (runs: SlurmRun list) = SlurmLevels.FromRuns runs

let private invocation (results: string) =
    LoraInvocation(LoraCommand [ "/opt/lora/lora" ], "/work dir/spec.yaml", results, "/work dir", [])

let private markDone (results: string) (hash: string) =
    Directory.CreateDirectory(Path.Combine(results, hash)) |> ignore
    File.WriteAllText(Path.Combine(results, hash, "metrics.json"), "{}")

let private submit (fake: FakeSlurm) (results: string) (options: SlurmOptions) dryRun (runs: SlurmRun list) =
    SlurmSubmitter(fake).Submit(levelsOf runs, invocation results, options, dryRun, "sub1")

let private throwsWith<'e when 'e :> exn> (f: unit -> unit) (fragments: string list) =
    let e = Expect.throwsC f id
    Expect.isTrue (e :? 'e) (sprintf "expected %s, got %s: %s" typeof<'e>.Name (e.GetType().Name) e.Message)
    for fr in fragments do Expect.stringContains e.Message fr "the message says what is wrong"

/// Runs `bash -c 'printf %s <quoted>'` and returns what bash printed.
let private bashEcho (quoted: string) =
    let info = Diagnostics.ProcessStartInfo("bash", RedirectStandardOutput = true, UseShellExecute = false)
    info.ArgumentList.Add "-c"
    info.ArgumentList.Add("printf %s " + quoted)
    use p = Diagnostics.Process.Start info
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    out

let levels =
    testList "levels" [
        test "pretraining first, tunes after, a tune of a tune last" {
            let eval = run "e1" "tune of tune" [ "t1" ]
            let ls = levelsOf [ eval; tune2; pretrain; tune1 ]
            let hashes = ls |> Seq.map (Seq.map (fun r -> r.Hash) >> List.ofSeq) |> List.ofSeq
            Expect.equal hashes [ [ "p0" ]; [ "t2"; "t1" ]; [ "e1" ] ] "levels by longest dependency chain, plan order inside"
        }
        test "an unknown dependency, a cycle, a duplicate and an unsafe hash are refused" {
            throwsWith<ArgumentException> (fun () -> levelsOf [ run "t1" "lora" [ "gone" ] ] |> ignore) [ "gone"; "lora" ]
            throwsWith<ArgumentException> (fun () -> levelsOf [ run "a" "A" [ "b" ]; run "b" "B" [ "a" ] ] |> ignore) [ "cycle" ]
            throwsWith<ArgumentException> (fun () -> levelsOf [ run "a" "A" []; run "a" "A2" [] ] |> ignore) [ "same hash" ]
            throwsWith<ArgumentException> (fun () -> levelsOf [ run "a b;rm" "A" [] ] |> ignore) [ "a b;rm" ]
        }
    ]

let scripts =
    testList "scripts" [
        test "one array task per run, with range, throttle, resources, log pattern and --only" {
            let options = SlurmOptions(Partition = "gpu", GpusPerTask = 2, Time = "02:00:00", MaxParallel = 2, CpusPerTask = 4)
            let s = SbatchScript.Create("level-1", 1, [ tune1; tune2; run "t3" "lora r16" [ "p0" ] ], invocation "/res", options, "/res/slurm/sub1")
            let lines = s.Text.Split('\n') |> Set.ofArray
            for expected in
                [ "#!/bin/bash"; "#SBATCH --array=0-2%2"; "#SBATCH --partition=gpu"; "#SBATCH --gres=gpu:2"
                  "#SBATCH --time=02:00:00"; "#SBATCH --cpus-per-task=4"; "#SBATCH --output=/res/slurm/sub1/logs/%A_%a.log"
                  "#SBATCH --chdir=\"/work dir\""; "#SBATCH --kill-on-invalid-dep=yes"
                  "runs=/res/slurm/sub1/level-1.runs"
                  "exec /opt/lora/lora run '/work dir/spec.yaml' --results /res --only \"$hash\"" ] do
                Expect.isTrue (lines.Contains expected) (sprintf "script has the line %s:\n%s" expected s.Text)
            Expect.equal s.RunListText "t1\nt2\nt3\n" "list line i+1 = hash of task i"
            Expect.equal s.ScriptPath "/res/slurm/sub1/level-1.sbatch" "script path"
            Expect.equal (s.LogPath("555", 2)) "/res/slurm/sub1/logs/555_2.log" "log of task 2"
            // every #SBATCH line precedes the first command, or sbatch ignores it
            let firstCommand = s.Text.Split('\n') |> Array.findIndex (fun l -> l.StartsWith "set ")
            let lastDirective = s.Text.Split('\n') |> Array.findIndexBack (fun l -> l.StartsWith "#SBATCH")
            Expect.isLessThan lastDirective firstCommand "directives come first"
        }
        test "--gpus-per-task style, no GPUs, no throttle" {
            let gpt = SbatchScript.Create("level-0", 0, [ pretrain ], invocation "/res", SlurmOptions(GpusPerTask = 1, GpuRequest = GpuRequest.GpusPerTask), "/d")
            Expect.stringContains gpt.Text "#SBATCH --gpus-per-task=1\n" "gpus-per-task directive"
            Expect.stringContains gpt.Text "#SBATCH --array=0-0\n" "a single task array, no %"
            let cpu = SbatchScript.Create("level-0", 0, [ pretrain ], invocation "/res", SlurmOptions(), "/d")
            Expect.isFalse (cpu.Text.Contains "gpu") "no GPU request when GpusPerTask = 0"
            Expect.isFalse (cpu.Text.Contains "--partition") "default partition"
        }
        test "the task script picks its hash from the list file by SLURM_ARRAY_TASK_ID" {
            use dir = new TempDir()
            // the lora command is a stub that prints its arguments
            let stub = dir.File "lora-stub.sh"
            File.WriteAllText(stub, "#!/bin/bash\necho \"$@\"\n")
            let lora = LoraInvocation(LoraCommand [ "bash"; stub ], "/s.yaml", "/r", dir.Path, [ "--device"; "cuda" ])
            let s = SbatchScript.Create("level-0", 0, [ tune1; tune2 ], lora, SlurmOptions(), dir.Path)
            File.WriteAllText(s.ScriptPath, s.Text)
            File.WriteAllText(s.RunListPath, s.RunListText)
            let runTask (id: int) =
                let info = Diagnostics.ProcessStartInfo("bash", RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
                info.ArgumentList.Add s.ScriptPath
                info.Environment["SLURM_ARRAY_TASK_ID"] <- string id
                info.Environment["SLURM_ARRAY_JOB_ID"] <- "7"
                use p = Diagnostics.Process.Start info
                let out = p.StandardOutput.ReadToEnd()
                p.StandardError.ReadToEnd() |> ignore
                p.WaitForExit()
                p.ExitCode, out
            let code1, out1 = runTask 1
            Expect.equal code1 0 "task 1 runs"
            Expect.stringContains out1 "run /s.yaml --results /r --only t2 --device cuda" "task 1 runs the second hash"
            let code9, _ = runTask 9
            Expect.equal code9 2 "a task id beyond the list fails instead of running nothing"
        }
        testProp "Shell.Quote survives bash for any string" (fun (s: NonNull<string>) ->
            let s = s.Get.Replace("\000", "")
            bashEcho (Shell.Quote s) = s)
    ]

let submitting =
    testList "submit" [
        test "one array per level, tunes after their pretraining, ledger and files written" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            let r = submit fake dir.Path (SlurmOptions(MaxParallel = 2)) false plan
            let sb = fake.SbatchCalls
            Expect.equal sb.Length 2 "two levels, two sbatch calls"
            Expect.equal sb[0] [ "--parsable"; Path.Combine(dir.Path, "slurm", "sub1", "level-0.sbatch") ] "level 0 waits for nothing"
            Expect.equal sb[1] [ "--parsable"; "--dependency=afterok:101"; Path.Combine(dir.Path, "slurm", "sub1", "level-1.sbatch") ]
                "the tunes wait for the whole pretraining array"
            Expect.equal (r.Arrays |> Seq.map (fun a -> a.JobId) |> List.ofSeq) [ "101"; "102" ] "job ids from --parsable"
            let level1 = File.ReadAllText(Path.Combine(dir.Path, "slurm", "sub1", "level-1.sbatch"))
            Expect.stringContains level1 "#SBATCH --array=0-1\n" "two tunes: a throttle of 2 is no limit"
            Expect.equal (File.ReadAllText(Path.Combine(dir.Path, "slurm", "sub1", "level-1.runs"))) "t1\nt2\n" "tune hashes"
            Expect.isTrue (Directory.Exists(Path.Combine(dir.Path, "slurm", "sub1", "logs"))) "Slurm needs the log folder to exist"
            let ledger = JobLedger.Load dir.Path
            Expect.equal ledger["t2"].JobId "102_1" "t2 is task 1 of job 102"
            Expect.equal ledger["t2"].Log (Path.Combine(dir.Path, "slurm", "sub1", "logs", "102_1.log")) "its log"
            Expect.equal ledger["p0"].JobId "101_0" "p0 is task 0 of job 101"
        }
        test "done runs are not submitted and empty levels are skipped" {
            use dir = new TempDir()
            markDone dir.Path "p0"
            let fake = FakeSlurm()
            let r = submit fake dir.Path (SlurmOptions()) false plan
            Expect.equal fake.SbatchCalls.Length 1 "only the tunes' level"
            Expect.equal (fake.SbatchCalls[0][1]) (Path.Combine(dir.Path, "slurm", "sub1", "level-1.sbatch")) "no dependency on a done run"
            Expect.equal (r.Skipped |> Seq.map (fun s -> s.Run.Hash) |> List.ofSeq) [ "p0" ] "p0 left out"
            markDone dir.Path "t1"; markDone dir.Path "t2"
            let fake2 = FakeSlurm()
            let r2 = submit fake2 dir.Path (SlurmOptions()) false plan
            Expect.isEmpty fake2.SbatchCalls "all done: nothing submitted"
            Expect.stringContains (r2.ToText()) "nothing to submit" "says so"
        }
        test "a tune waits only for the pretraining tasks it needs" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            let runs = [ run "pa" "pretrain A" []; run "pb" "pretrain B" []; run "ta" "tune A" [ "pa" ]; run "tb" "tune B" [ "pb" ]; run "tc" "tune C" [ "pb" ] ]
            // tune A is done: the remaining tunes need only pretraining B (task 1 of job 101)
            markDone dir.Path "ta"
            submit fake dir.Path (SlurmOptions()) false runs |> ignore
            Expect.equal (fake.SbatchCalls[1][1]) "--dependency=afterok:101_1" "only task 1 of the pretraining array"
        }
        test "a dry run prints scripts and sbatch lines, and submits and writes nothing" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            let r = submit fake dir.Path (SlurmOptions(Partition = "gpu")) true plan
            Expect.isEmpty fake.SbatchCalls "no sbatch"
            Expect.isFalse (Directory.Exists(Path.Combine(dir.Path, "slurm"))) "no files"
            let text = r.ToText()
            Expect.stringContains text "#SBATCH --partition=gpu" "the scripts"
            Expect.stringContains text "p0\n" "the run lists"
            Expect.stringContains text "--dependency=afterok:<level-0>" "the chaining, with a placeholder id"
            Expect.stringContains text "nothing was written or submitted" "says it is a dry run"
        }
        test "resubmitting leaves queued and running runs alone and resubmits only failed ones" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            submit fake dir.Path (SlurmOptions()) false plan |> ignore
            // the pretraining runs, the tunes wait
            fake.Squeue <- CommandResult(0, "101_0|RUNNING\n102_0|PENDING\n102_1|PENDING\n", "")
            let fake2 = FakeSlurm(Squeue = fake.Squeue)
            let again = SlurmSubmitter(fake2).Submit(levelsOf plan, invocation dir.Path, SlurmOptions(), false, "sub2")
            Expect.isEmpty fake2.SbatchCalls "everything is still in Slurm"
            Expect.equal again.Skipped.Count 3 "all three left out"
            // later: the pretraining and t1 finished, t2 failed
            markDone dir.Path "p0"; markDone dir.Path "t1"
            let fake3 = FakeSlurm(Squeue = CommandResult(1, "", "slurm_load_jobs error: Invalid job id specified"),
                                  Sacct = CommandResult(0, "102_0|COMPLETED\n102_0.batch|COMPLETED\n102_1|FAILED\n102_1.batch|FAILED\n", ""))
            let third = SlurmSubmitter(fake3).Submit(levelsOf plan, invocation dir.Path, SlurmOptions(), false, "sub3")
            Expect.equal fake3.SbatchCalls.Length 1 "one array"
            Expect.equal (File.ReadAllText(Path.Combine(dir.Path, "slurm", "sub3", "level-1.runs"))) "t2\n" "only the failed tune"
            Expect.equal (third.Arrays[0].AfterOk |> List.ofSeq) [] "its pretraining is done"
            Expect.equal ((JobLedger.Load dir.Path).["t2"].JobId) "101_0" "the ledger points at the new task"
            Expect.equal ((JobLedger.Load dir.Path).["t1"].JobId) "102_0" "and keeps the old one of t1"
        }
        test "a tune whose pretraining is still running waits for that task" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            submit fake dir.Path (SlurmOptions()) false [ pretrain ] |> ignore
            let fake2 = FakeSlurm(Squeue = CommandResult(0, "101_0|RUNNING\n", ""))
            SlurmSubmitter(fake2).Submit(levelsOf plan, invocation dir.Path, SlurmOptions(), false, "sub2") |> ignore
            Expect.equal fake2.SbatchCalls.Length 1 "only the tunes"
            Expect.equal (fake2.SbatchCalls[0][1]) "--dependency=afterok:101_0" "afterok on the running task"
        }
        test "a level larger than MaxArraySize becomes several arrays" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            let tunes = [ for i in 1..5 -> run (sprintf "t%d" i) (sprintf "tune %d" i) [ "p0" ] ]
            let r = submit fake dir.Path (SlurmOptions(MaxArraySize = 2)) false (pretrain :: tunes)
            Expect.equal (r.Arrays |> Seq.map (fun a -> a.Script.Name) |> List.ofSeq)
                [ "level-0"; "level-1-part-0"; "level-1-part-1"; "level-1-part-2" ] "three parts of at most 2"
            Expect.equal ((JobLedger.Load dir.Path).["t5"].JobId) "104_0" "t5 is the first task of the third part"
        }
        test "sbatch missing or refusing is reported with what was already submitted" {
            use dir = new TempDir()
            let fake = FakeSlurm(Sbatch = Some(fun () -> CommandResult(127, "", "", false)))
            throwsWith<InvalidOperationException> (fun () -> submit fake dir.Path (SlurmOptions()) false plan |> ignore) [ "--dry-run"; "login node" ]
            let mutable n = 0
            let refusing = FakeSlurm(Sbatch = Some(fun () ->
                n <- n + 1
                if n = 1 then CommandResult(0, "7\n", "") else CommandResult(1, "", "sbatch: error: invalid partition specified: gpu")))
            throwsWith<InvalidOperationException> (fun () -> submit refusing dir.Path (SlurmOptions(Partition = "gpu")) false plan |> ignore)
                [ "invalid partition"; "level-0 as job 7" ]
            Expect.equal ((JobLedger.Load dir.Path).["p0"].JobId) "7_0" "what went through is recorded"
        }
        test "LORA_SLURM_COMMAND replaces the command the compute nodes run" {
            // no other test reads this variable: every other test passes its LoraCommand explicitly
            Environment.SetEnvironmentVariable(LoraCommand.OverrideVariable, "  apptainer exec /shared/lora.sif   lora ")
            try
                Expect.equal (LoraCommand.FromEnvironmentOrProcess().Prefix |> List.ofSeq) [ "apptainer"; "exec"; "/shared/lora.sif"; "lora" ] "split on spaces"
            finally
                Environment.SetEnvironmentVariable(LoraCommand.OverrideVariable, null)
            Expect.equal (LoraCommand.FromEnvironmentOrProcess().Prefix |> List.ofSeq) (LoraCommand.FromCurrentProcess().Prefix |> List.ofSeq) "unset: this process"
        }
        test "bad options are all reported at once" {
            let bad = SlurmOptions(Time = "two hours", GpusPerTask = -1, MaxParallel = 0, Partition = "a b")
            throwsWith<ArgumentException> (fun () -> bad.Validate()) [ "--time 'two hours'"; "--gpus-per-task -1"; "--max-parallel 0"; "--partition 'a b'" ]
            for ok in [ "90"; "30:00"; "02:00:00"; "1-12"; "1-12:30"; "2-00:00:00" ] do
                SlurmOptions(Time = ok).Validate()
        }
        test "the lora command of this process points at an existing program" {
            let c = LoraCommand.FromCurrentProcess()
            Expect.isTrue (File.Exists c.Prefix[0]) "the executable exists"
            if Path.GetFileNameWithoutExtension(c.Prefix[0]) = "dotnet" then
                Expect.equal c.Prefix.Count 2 "dotnet + the entry assembly"
                Expect.isTrue (c.Prefix[1].EndsWith ".dll" && File.Exists c.Prefix[1]) "the assembly exists"
        }
    ]

let status =
    testList "status" [
        test "sacct output: steps skipped, pending ranges expanded, reasons dropped" {
            let out = "101_0|COMPLETED\n101_0.batch|COMPLETED\n101_0.extern|COMPLETED\n101_1|CANCELLED by 0\n101_[2-4,7%2]|PENDING\n102|FAILED\n"
            let m = SlurmStates.ParseSacct out
            Expect.equal (m |> Seq.map (fun kv -> kv.Key, kv.Value) |> List.ofSeq)
                [ "101_0", "COMPLETED"; "101_1", "CANCELLED by 0"; "101_2", "PENDING"; "101_3", "PENDING"; "101_4", "PENDING"
                  "101_7", "PENDING"; "102", "FAILED" ] "parsed"
            Expect.equal (SlurmStates.Classify "CANCELLED by 0") (Nullable TaskPhase.Failed) "cancelled is failed"
            Expect.equal (SlurmStates.Classify "COMPLETING") (Nullable TaskPhase.Running) "completing is running"
            Expect.equal (SlurmStates.Classify "PENDING") (Nullable TaskPhase.Queued) "pending is queued"
            Expect.equal (SlurmStates.Classify "OUT_OF_MEMORY") (Nullable TaskPhase.Failed) "oom is failed"
            Expect.isFalse (SlurmStates.Classify("SOMETHING_NEW").HasValue) "unknown words are unknown"
        }
        test "per run: done, running, queued, failed with its log, not submitted" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            let runs = plan @ [ run "t3" "lora r16" [ "p0" ]; run "t4" "never submitted" [ "p0" ] ]
            SlurmSubmitter(fake).Submit(levelsOf (plan @ [ run "t3" "lora r16" [ "p0" ] ]), invocation dir.Path, SlurmOptions(), false, "s") |> ignore
            markDone dir.Path "p0"
            let log = Path.Combine(dir.Path, "slurm", "s", "logs", "102_1.log")
            File.WriteAllText(log, "out of memory")
            let fake2 = FakeSlurm(Squeue = CommandResult(0, "102_0|RUNNING\n102_2|PENDING\n", ""),
                                  Sacct = CommandResult(0, "102_1|OUT_OF_MEMORY\n102_1.batch|OUT_OF_MEMORY\n", ""))
            let report = SlurmStatus(fake2).Read(runs, dir.Path)
            let states = report.Runs |> Seq.map (fun s -> s.Run.Hash, s.State) |> List.ofSeq
            Expect.equal states
                [ "p0", RunState.Done; "t1", RunState.Running; "t2", RunState.Failed; "t3", RunState.Pending; "t4", RunState.Pending ] "states"
            let t2 = report.Runs |> Seq.find (fun s -> s.Run.Hash = "t2")
            Expect.stringContains t2.Detail log "a failed run shows its log"
            Expect.stringContains t2.Detail "OUT_OF_MEMORY" "and why"
            Expect.equal (report.Runs |> Seq.find (fun s -> s.Run.Hash = "t4")).Detail "not submitted" "t4"
            Expect.isTrue (report.Runs |> Seq.find (fun s -> s.Run.Hash = "t3")).InSlurm "t3 is queued in Slurm"
            let squeueCall = fake2.Calls |> List.find (fun (p, _) -> p = "squeue") |> snd
            Expect.contains squeueCall "--jobs=102" "asks only about the tunes' job (p0 is done)"
            let text = report.ToText()
            Expect.stringContains text "2 pending, 1 running, 1 done, 1 failed" "summary line"
            Expect.stringContains text "\nfailed   lora r8              t2    102_1  OUT_OF_MEMORY; log: " "table row"
        }
        test "without accounting storage a task that left the queue without results is failed; without squeue it is unknown" {
            use dir = new TempDir()
            SlurmSubmitter(FakeSlurm()).Submit(levelsOf plan, invocation dir.Path, SlurmOptions(), false, "s") |> ignore
            markDone dir.Path "p0"; markDone dir.Path "t1"
            let noAccounting = FakeSlurm(Squeue = CommandResult(0, "", ""))
            let report = SlurmStatus(noAccounting).Read(plan, dir.Path)
            let t2 = report.Runs[2]
            Expect.equal t2.State RunState.Failed "t2 failed"
            Expect.stringContains t2.Detail "never started" "no log: it never ran"
            Expect.stringContains (String.Join("\n", report.Notes)) "accounting storage is disabled" "the note says why"
            let noSlurm = FakeSlurm(Squeue = CommandResult(127, "", "", false))
            let unknown = SlurmStatus(noSlurm).Read(plan, dir.Path)
            Expect.equal unknown.Runs[2].State RunState.Pending "cannot tell: still pending"
            Expect.stringContains unknown.Runs[2].Detail "unknown" "says it is unknown"
            Expect.stringContains (String.Join("\n", unknown.Notes)) "squeue is not installed" "and why"
        }
        test "no Slurm call when nothing was submitted" {
            use dir = new TempDir()
            let fake = FakeSlurm()
            let report = SlurmStatus(fake).Read(plan, dir.Path)
            Expect.isEmpty fake.Calls "no squeue, no sacct"
            Expect.isTrue (report.Runs |> Seq.forall (fun s -> s.State = RunState.Pending)) "all pending"
        }
        test "a broken jobs.json is reported with its path and what to do" {
            use dir = new TempDir()
            Directory.CreateDirectory(Path.Combine(dir.Path, "slurm")) |> ignore
            File.WriteAllText(JobLedger.PathIn dir.Path, "{ not json")
            throwsWith<InvalidDataException> (fun () -> JobLedger.Load dir.Path |> ignore) [ "jobs.json"; "delete it" ]
        }
    ]

/// Against a real Slurm (scripts/slurm-local-test.sh -- env LORA_SLURM_LIVE=1 dotnet run ...):
/// a stand-in for `lora run` that writes results/<hash>/metrics.json, refuses to start a tune whose
/// pretraining has no results (so a wrong order fails), and fails the run "bad" until told not to.
let commands =
    testList "commands" [
        test "lora submit --dry-run prints the scripts; lora status prints the table" {
            use dir = new TempDir()
            let spec = dir.File "spec.yaml"
            File.WriteAllText(spec, "experiments: []")
            let out, err = new StringWriter(), new StringWriter()
            let fake = FakeSlurm()
            let code = SlurmCommands.Submit(plan, spec, dir.File "results", SlurmOptions(GpusPerTask = 1), true, out, err, fake, lora = LoraCommand [ "/opt/lora" ])
            Expect.equal code 0 (err.ToString())
            Expect.stringContains (out.ToString()) (sprintf "exec /opt/lora run %s --results %s --only \"$hash\"" spec (dir.File "results")) "the task command"
            Expect.stringContains (out.ToString()) "#SBATCH --gres=gpu:1" "the GPU request"
            Expect.isEmpty fake.SbatchCalls "dry run"
            let status = new StringWriter()
            Expect.equal (SlurmCommands.Status(plan, dir.File "results", status, err, fake)) 0 "status"
            Expect.stringContains (status.ToString()) "3 pending, 0 running, 0 done, 0 failed" "nothing submitted yet"
        }
        test "lora submit on a real spec: pretraining array first, the tunes after it, hashes from the plan" {
            use dir = new TempDir()
            let spec = Path.Combine(repoRoot, "scripts", "slurm-tiny.yaml")
            let results = dir.File "results"
            let fake = FakeSlurm()
            let o : Lora.CommandLine.SubmitOptions =
                { Spec = spec; Results = results; Partition = "debug"; GpusPerTask = Nullable 1; Time = "10"
                  MaxParallel = Nullable 2; DryRun = false }
            let out, err = new StringWriter(), new StringWriter()
            Expect.equal (PlanToSlurm.Submit(o, out, err, fake, LoraCommand [ "/opt/lora" ])) 0 (err.ToString())
            let plan = Lora.Runner.Plan.Compile(Lora.Runner.Commands.LoadSpec(spec, err), Lora.Runner.ResultsStore results)
            let runs = PlanToSlurm.Runs plan
            let pre = runs |> Seq.filter (fun r -> r.DependsOn.Count = 0) |> Seq.map (fun r -> r.Hash) |> List.ofSeq
            let tunes = runs |> Seq.filter (fun r -> r.DependsOn.Count = 1) |> Seq.map (fun r -> r.Hash) |> List.ofSeq
            Expect.equal (pre.Length, tunes.Length) (1, 3) "one pretraining, three tunes"
            let folder = Directory.GetDirectories(Path.Combine(results, "slurm")) |> Array.exactlyOne
            Expect.equal (File.ReadAllLines(Path.Combine(folder, "level-0.runs")) |> List.ofArray) pre "level 0"
            Expect.equal (File.ReadAllLines(Path.Combine(folder, "level-1.runs")) |> List.ofArray) tunes "level 1"
            Expect.equal (fake.SbatchCalls[1][1]) "--dependency=afterok:101" "tunes after the pretraining"
            Expect.stringContains (File.ReadAllText(Path.Combine(folder, "level-1.sbatch"))) (sprintf "exec /opt/lora run %s --results %s --only" spec results) "task command"
            // what `lora plan` can overlay: the pretraining task failed, its tunes were cancelled
            let store = Lora.Runner.ResultsStore results
            let noSlurm = PlanToSlurm.SlurmView(Lora.Runner.Plan.Compile(Lora.Runner.Commands.LoadSpec(spec, err), Lora.Runner.ResultsStore(dir.File "elsewhere")), Lora.Runner.ResultsStore(dir.File "elsewhere"), fake)
            Expect.isNull noSlurm "no jobs.json: no Slurm view"
            let view = PlanToSlurm.SlurmView(plan, store, FakeSlurm(Sacct = CommandResult(0, "101_0|TIMEOUT\n102_[0-2]|CANCELLED by 0\n", "")))
            Expect.isTrue (view.Runs |> Seq.forall (fun s -> s.State = RunState.Failed)) (view.ToText())
            Expect.stringContains view.Runs[0].Detail "TIMEOUT" "the pretraining hit its time limit"
            let failed = PlanToSlurm.FailedTasks(plan, store, err, FakeSlurm(Squeue = CommandResult(0, "102_0|PENDING\n102_2|RUNNING\n", ""), Sacct = CommandResult(0, "101_0|TIMEOUT\n102_1|FAILED\n", "")))
            Expect.equal (failed.Keys |> Seq.sort |> List.ofSeq) (List.sort [ pre[0]; tunes[1] ]) "lora plan shows these two as failed"
            Expect.equal failed[pre[0]] (Path.Combine(folder, "logs", "101_0.log")) "with the Slurm log"
            File.WriteAllText(JobLedger.PathIn results, "{ broken")
            let err2 = new StringWriter()
            Expect.isEmpty (PlanToSlurm.FailedTasks(plan, store, err2, FakeSlurm())) "a broken jobs.json does not break lora plan"
            Expect.stringContains (err2.ToString()) "jobs.json" "but is noted"
        }
        test "bad options and a missing spec exit 2 with the reason on stderr" {
            use dir = new TempDir()
            let out, err = new StringWriter(), new StringWriter()
            let code = SlurmCommands.Submit(plan, dir.File "nope.yaml", dir.Path, SlurmOptions(), true, out, err, FakeSlurm(), lora = LoraCommand [ "/opt/lora" ])
            Expect.equal code 2 "missing spec"
            Expect.stringContains (err.ToString()) "nope.yaml does not exist" "says which file"
            File.WriteAllText(dir.File "s.yaml", "")
            let err2 = new StringWriter()
            let code2 = SlurmCommands.Submit(plan, dir.File "s.yaml", dir.Path, SlurmOptions(Time = "soon"), true, out, err2, FakeSlurm(), lora = LoraCommand [ "/opt/lora" ])
            Expect.equal code2 2 "bad time"
            Expect.stringContains (err2.ToString()) "--time 'soon'" "says which option"
        }
    ]

let live =
    let fakeLora = """#!/bin/bash
set -eu
spec=$2; results=$4; hash=$6
if [ "$hash" = bad ] && [ ! -e "$results/fixed" ]; then echo "bad run: diverged" >&2; exit 1; fi
case "$hash" in t*|bad) [ -e "$results/p0/metrics.json" ] || { echo "pretraining missing" >&2; exit 3; } ;; esac
case "$hash" in x1) [ -e "$results/bad/metrics.json" ] || { echo "bad missing" >&2; exit 3; } ;; esac
mkdir -p "$results/$hash"
echo "{\"run\": \"$hash\", \"spec\": \"$spec\"}" > "$results/$hash/metrics.json"
"""
    let waitEmpty () =
        let runner = ProcessCommandRunner() :> ICommandRunner
        let deadline = DateTime.UtcNow.AddSeconds 180.0
        let rec loop () =
            let q = runner.Run("squeue", [ "--noheader"; "--format=%i" ])
            if q.ExitCode <> 0 then failtestf "squeue failed: %s" q.Stderr
            elif q.Stdout.Trim() = "" then ()
            elif DateTime.UtcNow > deadline then failtestf "jobs still queued after 180 s:\n%s" q.Stdout
            else Threading.Thread.Sleep 1000; loop ()
        loop ()
    testList "SlurmLive" [
        test "a plan runs on a real cluster in dependency order; a failure shows its log; resubmitting runs only what is missing" {
            if Environment.GetEnvironmentVariable "LORA_SLURM_LIVE" <> "1" then
                skiptest "needs a Slurm cluster: run under scripts/slurm-local-test.sh with LORA_SLURM_LIVE=1"
            use dir = new TempDir()
            let stub = dir.File "fake-lora.sh"
            File.WriteAllText(stub, fakeLora)
            let results = Path.Combine(dir.Path, "results")
            let lora = LoraInvocation(LoraCommand [ "bash"; stub ], dir.File "spec.yaml", results, dir.Path, [])
            let runs = plan @ [ run "bad" "diverging tune" [ "p0" ]; run "x1" "tune of bad" [ "bad" ] ]
            let slurm = ProcessCommandRunner()
            let first = SlurmSubmitter(slurm).Submit(levelsOf runs, lora, SlurmOptions(MaxParallel = 2, Time = "5"), false)
            Expect.equal first.Arrays.Count 3 "three levels"
            waitEmpty ()
            let report = SlurmStatus(slurm).Read(runs, results)
            let states = report.Runs |> Seq.map (fun s -> s.Run.Hash, s.State) |> List.ofSeq
            Expect.equal states [ "p0", RunState.Done; "t1", RunState.Done; "t2", RunState.Done; "bad", RunState.Failed; "x1", RunState.Failed ]
                (report.ToText())
            let bad = report.Runs[3]
            Expect.stringContains (File.ReadAllText bad.LogPath) "bad run: diverged" "the failed task's log holds its error"
            Expect.stringContains bad.Detail bad.LogPath "status points at the log"
            Expect.stringContains report.Runs[4].Detail "never started" "the dependant was cancelled"
            File.WriteAllText(Path.Combine(results, "fixed"), "")
            let second = SlurmSubmitter(slurm).Submit(levelsOf runs, lora, SlurmOptions(), false)
            Expect.equal (second.Arrays |> Seq.map (fun a -> a.Script.RunListText) |> List.ofSeq) [ "bad\n"; "x1\n" ] "only what is missing"
            waitEmpty ()
            let final = SlurmStatus(slurm).Read(runs, results)
            Expect.isTrue (final.Runs |> Seq.forall (fun s -> s.State = RunState.Done)) (final.ToText())
        }
    ]

let tests = testList "Slurm" [ levels; scripts; submitting; status; commands; live ]
