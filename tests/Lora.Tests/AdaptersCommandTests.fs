/// `lora adapters list|delete|rename`: the adapters of a multi-adapter PEFT folder (default at the
/// root, the others in subfolders), managed as files.
module Lora.Tests.AdaptersCommandTests

open System.IO
open Expecto
open Lora.Tests.Generators

/// A PEFT folder with "default" at its root and "style" and "task" in subfolders.
let private folder (dir: TempDir) =
    let root = dir.File "peft"
    let adapter (at: string) (r: int) =
        Directory.CreateDirectory at |> ignore
        File.WriteAllText(Path.Combine(at, "adapter_config.json"), sprintf "{\"peft_type\": \"LORA\", \"r\": %d, \"target_modules\": [\"qkv\", \"proj\"]}" r)
        File.WriteAllBytes(Path.Combine(at, "adapter_model.safetensors"), [| byte r |])
    adapter root 4
    adapter (Path.Combine(root, "style")) 8
    adapter (Path.Combine(root, "task")) 2
    Directory.CreateDirectory(Path.Combine(root, "notes")) |> ignore
    root

let private names (out: string) =
    out.Split('\n', System.StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun l -> l.Split("  ").[0]) |> List.ofArray

let tests =
    testList "lora adapters" [
        test "list names every adapter with its type, rank and targets; a folder without config is none" {
            use dir = new TempDir()
            let root = folder dir
            let code, out, err = runLora [ "adapters"; "list"; root ]
            Expect.equal (code, err) (0, "") "exit 0"
            Expect.equal (names out) [ "default"; "style"; "task" ] "the root, then the subfolders"
            Expect.stringContains out "style  LORA r=8, 2 target module(s)" "what its config says"
        }
        test "delete removes one adapter (a subfolder, or the root's two files) and leaves the others" {
            use dir = new TempDir()
            let root = folder dir
            let code, _, err = runLora [ "adapters"; "delete"; root; "style" ]
            Expect.equal (code, err) (0, "") "exit 0"
            Expect.isFalse (Directory.Exists(Path.Combine(root, "style"))) "its folder is gone"
            let code, _, _ = runLora [ "adapters"; "delete"; root; "default" ]
            Expect.equal code 0 "the root adapter"
            Expect.isFalse (File.Exists(Path.Combine(root, "adapter_config.json"))) "its config is gone"
            Expect.isTrue (Directory.Exists(Path.Combine(root, "notes"))) "what is not an adapter stays"
            let _, out, _ = runLora [ "adapters"; "list"; root ]
            Expect.equal (names out) [ "task" ] "one left"
            let code, _, err = runLora [ "adapters"; "delete"; root; "nosuch" ]
            Expect.equal code 1 "an unknown adapter fails"
            Expect.stringContains err "has no adapter 'nosuch'; it has: task" "and says what there is"
        }
        test "rename moves an adapter between names, to and from the root, and refuses a name taken" {
            use dir = new TempDir()
            let root = folder dir
            let code, _, err = runLora [ "adapters"; "rename"; root; "default"; "base" ]
            Expect.equal (code, err) (0, "") "the root adapter to a subfolder"
            Expect.equal (File.ReadAllBytes(Path.Combine(root, "base", "adapter_model.safetensors"))) [| 4uy |] "its weights moved"
            let code, _, _ = runLora [ "adapters"; "rename"; root; "task"; "default" ]
            Expect.equal code 0 "a subfolder to the root"
            Expect.equal (File.ReadAllBytes(Path.Combine(root, "adapter_model.safetensors"))) [| 2uy |] "the root is task's now"
            Expect.isFalse (Directory.Exists(Path.Combine(root, "task"))) "its empty folder is gone"
            let code, _, _ = runLora [ "adapters"; "rename"; root; "style"; "look" ]
            Expect.equal code 0 "between subfolders"
            let _, out, _ = runLora [ "adapters"; "list"; root ]
            Expect.equal (names out) [ "default"; "base"; "look" ] "renamed"
            let code, _, err = runLora [ "adapters"; "rename"; root; "look"; "base" ]
            Expect.equal code 1 "a name taken"
            Expect.stringContains err "already has an adapter 'base'" "says so"
            let code, _, err = runLora [ "adapters"; "rename"; root; "look"; "../x" ]
            Expect.equal code 1 "a path is no name"
            Expect.stringContains err "not a usable adapter name" "says so"
            // an adapter is chosen by its folder: one without a root adapter says which to give
            let code, _, _ = runLora [ "adapters"; "delete"; root; "default" ]
            Expect.equal code 0 "no default left"
            let config = dir.File "vit.json"
            File.WriteAllText(config, "{\"img_size\": 28, \"patch_size\": 7, \"in_chans\": 1, \"embed_dim\": 32, \"depth\": 1, \"num_heads\": 2}")
            let code, _, err = runLora [ "combine"; "--model"; "vit"; "--model-config"; config; "--adapter"; root; "--adapter"; root; "--out"; dir.File "out" ]
            Expect.equal code 1 "refused"
            Expect.stringContains err "has no default adapter at its root but 2 in subfolders (base, look): give --adapter" "names the subfolders"
            let code, _, err = runLora [ "adapters"; "move"; root ]
            Expect.equal code 2 "an unknown action"
            Expect.stringContains err "unknown action 'move'" "says so"
        }
    ]
