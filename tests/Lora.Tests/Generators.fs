/// Shared FsCheck configuration: every property prints its replay seed on failure (Expecto does so
/// for FsCheckConfig), and generators live here rather than in a global Arb.Register.
module Lora.Tests.Generators

open Expecto

let config = { FsCheckConfig.defaultConfig with maxTest = 40 }

let testProp name = testPropertyWithConfig config name

/// The repository root, found by walking up from the test binary (tests must not depend on the cwd).
let repoRoot =
    let rec up (d: System.IO.DirectoryInfo) =
        if isNull d then failwith "could not find Lora.sln above the test binary"
        elif System.IO.File.Exists(System.IO.Path.Combine(d.FullName, "Lora.sln")) then d.FullName
        else up d.Parent
    up (System.IO.DirectoryInfo System.AppContext.BaseDirectory)

/// A file under tests/fixtures (copies of the timm/PEFT reference outputs).
let fixture (name: string) = System.IO.Path.Combine(repoRoot, "tests", "fixtures", name)

/// A fresh temporary folder, deleted when disposed.
type TempDir() =
    let path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "lora-test-" + System.Guid.NewGuid().ToString("N"))
    do System.IO.Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.File(name: string) = System.IO.Path.Combine(path, name)
    interface System.IDisposable with
        member _.Dispose() = try System.IO.Directory.Delete(path, true) with _ -> ()

/// Runs `lora ARGS` in-process (Commands.Dispatch) for commands that train nothing: (exit code,
/// stdout, stderr), with Unix line ends.
let runLora (args: string list) =
    use out = new System.IO.StringWriter()
    use err = new System.IO.StringWriter()
    let code = Lora.Runner.Commands.Dispatch(List.toArray args, (fun () -> failwith "this command needs no run executor"), out, err)
    code, out.ToString().Replace("\r\n", "\n"), err.ToString().Replace("\r\n", "\n")
