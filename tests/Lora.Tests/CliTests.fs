/// The model commands of the `lora` program (summary, merge, predict) through Commands.Dispatch,
/// with golden files (tests/Lora.Tests/golden) for what users see. Set LORA_UPDATE_GOLDEN=1 to
/// rewrite the golden files on purpose.
module Lora.Tests.CliTests

open System
open System.IO
open Expecto
open TorchSharp
open Lora.Core.IO
open Lora.Core.Models
open Lora.Runner
open Lora.Tests.Generators

let private goldenPath name = Path.Combine(repoRoot, "tests", "Lora.Tests", "golden", name)

/// Compares text with a golden file (rewritten when LORA_UPDATE_GOLDEN=1).
let golden (name: string) (actual: string) =
    let path = goldenPath name
    if Environment.GetEnvironmentVariable "LORA_UPDATE_GOLDEN" = "1" then
        Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
        File.WriteAllText(path, actual)
    Expect.isTrue (File.Exists path) $"golden file {name} exists (LORA_UPDATE_GOLDEN=1 writes it)"
    Expect.equal actual (File.ReadAllText(path).Replace("\r\n", "\n")) $"output equals golden/{name}"

/// Exactly one line on stderr, and no stack trace in it.
let oneLine (err: string) =
    let lines = err.TrimEnd('\n').Split('\n')
    Expect.equal lines.Length 1 $"one line on stderr, got:\n{err}"
    Expect.isFalse (err.Contains "   at ") "no stack trace"
    lines.[0]

let private summaryTests =
    testList "summary" [
        test "convnext_tiny LoRA r=2 on fc1,fc2: tfimm's counts" {
            let code, out, err = runLora [ "summary"; "convnext_tiny"; "--method"; "lora"; "--rank"; "2"; "--targets"; "fc1,fc2" ]
            Expect.equal (code, err) (0, "") "ok"
            Expect.stringContains out "Total params: 28,721,608\n" "total"
            Expect.stringContains out "Trainable params: 132,480\n" "trainable"
            Expect.stringContains out "Non-trainable params: 28,589,128\n" "non-trainable"
            golden "summary_convnext_tiny_lora_r2.txt" out
        }
        test "vit_base_patch16_224, 100 classes, LoRA r=8 on qkv, head trained: PEFT's counts" {
            let code, out, err = runLora [ "summary"; "vit_base_patch16_224"; "--classes"; "100"; "--method"; "lora"; "--rank"; "8"; "--targets"; "qkv"; "--train"; "head" ]
            Expect.equal (code, err) (0, "") "ok"
            Expect.stringContains out "Trainable params: 371,812\n" "trainable"
            Expect.stringContains out "Total params: 86,247,368\n" "total"
            Expect.stringContains out "LoRA: blocks.*.attn.qkv ×12" "tuned modules grouped"
            golden "summary_vit_base_lora_r8_head.txt" out
        }
        test "vit_base_patch16_224 DoRA: 399,460 trainable" {
            let code, out, _ = runLora [ "summary"; "vit_base_patch16_224"; "--classes"; "100"; "--method"; "dora"; "--rank"; "8"; "--targets"; "qkv"; "--train"; "head" ]
            Expect.equal code 0 "ok"
            Expect.stringContains out "Trainable params: 399,460\n" "trainable"
            golden "summary_vit_base_dora_r8_head.txt" out
        }
        test "vit_base_patch16_224 AdaLoRA init 12 → 8: 519,412 trainable" {
            let code, out, _ = runLora [ "summary"; "vit_base_patch16_224"; "--classes"; "100"; "--method"; "adalora"; "--init-rank"; "12"; "--rank"; "8"; "--targets"; "qkv"; "--train"; "head" ]
            Expect.equal code 0 "ok"
            Expect.stringContains out "Trainable params: 519,412\n" "trainable"
            golden "summary_vit_base_adalora_12_8_head.txt" out
        }
        test "vit_base_patch16_224 LoRA on qkv, proj, fc1, fc2: PEFT's 1,268,836 trainable (the benchmark's lora-all)" {
            let code, out, _ = runLora [ "summary"; "vit_base_patch16_224"; "--classes"; "100"; "--method"; "lora"; "--rank"; "8"; "--targets"; "qkv,proj,fc1,fc2"; "--train"; "head" ]
            Expect.equal code 0 "ok"
            Expect.stringContains out "Trainable params: 1,268,836\n" "trainable, as peft_anchor.py's lora-all"
            Expect.stringContains out "Total params: 87,144,392\n" "total: the base, the frozen head beside its trained copy, the LoRA factors"
        }
        test "full and head methods; adapter on a ViT" {
            let _, full, _ = runLora [ "summary"; "vit_base_patch16_224"; "--classes"; "100"; "--method"; "full" ]
            Expect.stringContains full "Trainable params: 85,875,556\n" "full: everything trains"
            let _, head, _ = runLora [ "summary"; "vit_base_patch16_224"; "--classes"; "100"; "--method"; "head" ]
            Expect.stringContains head "Trainable params: 76,900\n" "head: 768·100 + 100"
            Expect.stringContains head "Total params: 85,875,556\n" "head: nothing added"
            let code, adapter, _ = runLora [ "summary"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--method"; "adapter" ]
            Expect.equal code 0 "adapter ok"
            // per block: attn and mlp adapters, each 64→16→64 with biases = 2·(64·16 + 16 + 16·64 + 64)
            Expect.stringContains adapter "Trainable params: 8,512\n" "two blocks × two bottlenecks"
            let _, width8, _ = runLora [ "summary"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--method"; "adapter"; "--rank"; "8" ]
            // width 8: 4 × (64·8 + 8 + 8·64 + 64)
            Expect.stringContains width8 "Trainable params: 4,384\n" "--rank sets the bottleneck width"
        }
        test "unknown model: the zoo's suggestion, one line, exit 2" {
            let code, out, err = runLora [ "summary"; "convnext_tiy"; "--method"; "lora"; "--rank"; "2"; "--targets"; "fc1" ]
            Expect.equal code 2 "exit 2"
            Expect.equal out "" "nothing on stdout"
            let line = oneLine err
            Expect.stringContains line "Unknown model 'convnext_tiy'. Did you mean: convnext_tiny" "suggestion"
        }
        test "bad options: one line each, exit 2" {
            for args, expected in
                // the spec's vocabulary and defaults: targets default to qkv, as in a spec
                [ [ "summary"; "convnext_tiny"; "--method"; "lora"; "--rank"; "2" ], "target pattern 'qkv' matches no module"
                  [ "summary"; "convnext_tiny"; "--method"; "lorax"; "--targets"; "fc1" ], "unknown method 'lorax'"
                  [ "summary"; "convnext_tiny"; "--targets"; "qkv" ], "target pattern 'qkv' matches no module"
                  [ "summary"; "convnext_tiny"; "--targets"; "fc1"; "--bias"; "some" ], "unknown value 'some'"
                  [ "summary"; "convnext_tiny"; "--method"; "full"; "--targets"; "fc1" ], "full takes no options"
                  [ "summary"; "convnext_tiny"; "--method"; "lora"; "--targets"; "fc1"; "--init-rank"; "4" ], "'init_rank' does not apply to lora"
                  [ "summary"; "convnext_tiny"; "--method"; "adalora"; "--targets"; "fc1"; "--rank"; "4"; "--init-rank"; "2" ], "init_rank 2 is below the target rank 4"
                  [ "summary"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--method"; "lora"; "--rank"; "80"; "--targets"; "fc2" ], "exceeds min(in_features, out_features)" ] do
                let code, _, err = runLora args
                Expect.equal code 2 $"exit 2 for {args}"
                Expect.stringContains (oneLine err) expected "message"
        }
    ]

let private maxAbs (a: torch.Tensor) (b: torch.Tensor) = (a - b).abs().max().item<float32>() |> float

let private headerKeys (path: string) = Safetensors.ReadHeader(path).Entries |> Seq.map (fun e -> e.Name) |> Set.ofSeq

let private mergeArgs (weights: string) (adapter: string) (out: string) =
    [ "merge"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; weights; "--adapter"; adapter; "--out"; out ]

/// A copy of the PEFT adapter folder with its weights file replaced.
let private adapterWith (dir: TempDir) (name: string) (bytes: byte[]) =
    let folder = dir.File name
    Directory.CreateDirectory folder |> ignore
    File.Copy(fixture "peft_lora_vit_tiny/adapter_config.json", Path.Combine(folder, "adapter_config.json"), true)
    File.WriteAllBytes(Path.Combine(folder, "adapter_model.safetensors"), bytes)
    folder

let private mergeTests =
    testList "merge" [
        test "the merged timm checkpoint has timm's keys and reproduces PEFT's merged logits" {
            use dir = new TempDir()
            let out = dir.File "merged.safetensors"
            let code, stdout, err = runLora (mergeArgs (fixture "vit_tiny_p4_32.safetensors") (fixture "peft_lora_vit_tiny") out)
            Expect.equal (code, err) (0, "") "ok"
            Expect.stringContains stdout "merged 4 tuned layer(s)" "report"
            Expect.equal (headerKeys out) (headerKeys (fixture "vit_tiny_p4_32.safetensors")) "exactly the base file's keys"
            use _ = torch.no_grad()
            let io = Safetensors.Load(fixture "peft_lora_vit_tiny.io.safetensors")
            use m = Zoo.Create("vit", ModelArgs.FromFile(fixture "vit_tiny_p4_32.json"))
            StateDict.Load(m, out) |> ignore
            m.eval()
            use logits = m.call io.["input"]
            Expect.isLessThan (maxAbs logits io.["logits_merged"]) 1e-4 "logits_merged within 1e-4"
            let qkv (path: string) = Safetensors.Load(path).["blocks.0.attn.qkv.weight"]
            Expect.isGreaterThan (maxAbs (qkv out) (qkv (fixture "vit_tiny_p4_32.safetensors"))) 1e-4 "the adapter is in the weights"
            Expect.equal (Directory.GetFiles dir.Path |> Array.map Path.GetFileName) [| "merged.safetensors" |] "no temp file left"
        }
        test "DoRA, AdaLoRA and LoRA with a trained head and biases merge to the tuned model's outputs" {
            let configs =
                [ "dora", Lora.Core.Tuning.LoraConfig(UseDora = true, Targets = [| "qkv"; "fc2" |], Rank = 4)
                  "adalora", Lora.Core.Tuning.AdaLoraConfig(Targets = [| "qkv" |], InitRank = 6, TargetRank = 4)
                  "lora+head+bias", Lora.Core.Tuning.LoraConfig(Targets = [| "fc1" |], Rank = 2, ModulesToSave = [| "head" |], Bias = Lora.Core.Tuning.BiasMode.LoraOnly) ]
            for name, config in configs do
                use dir = new TempDir()
                use _ = torch.no_grad()
                use m = Zoo.Create("vit", ModelArgs.FromFile(fixture "vit_tiny_p4_32.json"))
                StateDict.Load(m, fixture "vit_tiny_p4_32.safetensors") |> ignore
                let t = Lora.Core.Tuning.Tuner.Apply(m, config)
                use g = new torch.Generator(7UL)
                for p in t.TrainableParameters() do
                    use r = torch.randn(p.shape, generator = g)
                    p.add_(r * 0.1) |> ignore
                Lora.Core.Tuning.AdapterCheckpoint.Save(t, dir.File "adapter")
                m.eval()
                use x = torch.randn([| 2L; 3L; 32L; 32L |], generator = g)
                use tuned = m.call x
                let out = dir.File "merged.safetensors"
                let code, _, err = runLora (mergeArgs (fixture "vit_tiny_p4_32.safetensors") (dir.File "adapter") out)
                Expect.equal (code, err) (0, "") $"{name}: ok"
                Expect.equal (headerKeys out) (headerKeys (fixture "vit_tiny_p4_32.safetensors")) $"{name}: timm's keys"
                use plain = Zoo.Create("vit", ModelArgs.FromFile(fixture "vit_tiny_p4_32.json"))
                StateDict.Load(plain, out) |> ignore
                plain.eval()
                use merged = plain.call x
                Expect.isLessThan (maxAbs merged tuned) 1e-4 $"{name}: merged = tuned"
        }
        test "unreadable or wrong files: one line, exit 1, no output file" {
            use dir = new TempDir()
            let good = File.ReadAllBytes(fixture "vit_tiny_p4_32.safetensors")
            let write name (bytes: byte[]) = let p = dir.File name in File.WriteAllBytes(p, bytes); p
            let lying =
                // the header claims far more bytes than the file holds
                let b = Array.copy good
                BitConverter.GetBytes(uint64 (good.Length * 2)).CopyTo(b, 0)
                b
            let goodAdapter = fixture "peft_lora_vit_tiny"
            let adapterBytes = File.ReadAllBytes(fixture "peft_lora_vit_tiny/adapter_model.safetensors")
            let cases =
                [ "empty weights", write "empty.safetensors" [||], goodAdapter, "empty.safetensors"
                  "truncated weights", write "truncated.safetensors" good.[.. good.Length / 2], goodAdapter, "truncated.safetensors"
                  "lying header", write "lying.safetensors" lying, goodAdapter, "header"
                  "wrong model", fixture "convnext_t_64.safetensors", goodAdapter, "does not fit"
                  "missing weights", dir.File "nowhere.safetensors", goodAdapter, "nowhere.safetensors"
                  "empty adapter", fixture "vit_tiny_p4_32.safetensors", adapterWith dir "empty-adapter" [||], "adapter_model.safetensors"
                  "truncated adapter", fixture "vit_tiny_p4_32.safetensors", adapterWith dir "truncated-adapter" adapterBytes.[.. adapterBytes.Length - 10], "adapter_model.safetensors"
                  "adapter for another model", fixture "vit_tiny_p4_32.safetensors", adapterWith dir "other-adapter" good, "does not fit"
                  "no adapter folder", fixture "vit_tiny_p4_32.safetensors", dir.File "no-adapter", "no-adapter" ]
            for name, weights, adapter, expected in cases do
                let out = dir.File "merged.safetensors"
                let code, _, err = runLora (mergeArgs weights adapter out)
                Expect.equal code 1 $"{name}: exit 1"
                let line = oneLine err
                Expect.stringStarts line "lora merge: " $"{name}: prefixed"
                Expect.stringContains line expected $"{name}: says what is wrong"
                Expect.isFalse (File.Exists out) $"{name}: no output file"
                Expect.isEmpty (Directory.GetFiles(dir.Path, "*.tmp")) $"{name}: no temp file"
        }
        test "unknown model: exit 2, the zoo's suggestion" {
            use dir = new TempDir()
            let code, _, err = runLora [ "merge"; "--model"; "vti"; "--weights"; fixture "vit_tiny_p4_32.safetensors"; "--adapter"; fixture "peft_lora_vit_tiny"; "--out"; dir.File "m.safetensors" ]
            Expect.equal code 2 "exit 2"
            Expect.stringContains (oneLine err) "Unknown model 'vti'. Did you mean: vit" "suggestion"
        }
    ]

/// Two 32×32 RGB test images (a gradient and a checkerboard) as channel-first bytes.
let private testImages =
    [ Array.init (3 * 32 * 32) (fun i -> byte ((i * 7 + i / 1024 * 60) % 256))
      Array.init (3 * 32 * 32) (fun i -> if (i % 32 / 4 + i / 128) % 2 = 0 then 230uy else byte (20 + i / 1024 * 40)) ]

/// What the fixture ViT with the PEFT adapter merged gives for the test images: softmax rows.
let private expectedProbabilities (normalise: torch.Tensor -> torch.Tensor) =
    use _ = torch.no_grad()
    use m = Zoo.Create("vit", ModelArgs.FromFile(fixture "vit_tiny_p4_32.json"))
    StateDict.Load(m, fixture "vit_tiny_p4_32.safetensors") |> ignore
    Lora.Core.Tuning.AdapterCheckpoint.Load(m, fixture "peft_lora_vit_tiny").MergeAndUnload() |> ignore
    m.eval()
    use x = torch.tensor(Array.concat testImages |> Array.map (fun b -> float32 b / 255.0f)).reshape(2L, 3L, 32L, 32L)
    use p = (m.call (normalise x)).softmax(1)
    Array.init 2 (fun i -> Array.init 10 (fun c -> p.[int64 i, int64 c].item<float32>() |> float))

let private predictTests =
    testList "predict" [
        test "top-k labels and scores, text and JSON, equal the model's softmax" {
            use dir = new TempDir()
            let images = testImages |> List.mapi (fun i px -> let p = dir.File $"img{i}.png" in Lora.Core.Data.Png.Write(p, ReadOnlySpan px, 3, 32, 32); p)
            let labels = [ for c in 0 .. 9 -> $"class-{c}" ]
            File.WriteAllLines(dir.File "labels.txt", labels)
            let args = [ "predict"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; fixture "vit_tiny_p4_32.safetensors"
                         "--adapter"; fixture "peft_lora_vit_tiny"; "--labels"; dir.File "labels.txt"; "--top-k"; "3" ]
            let expected = expectedProbabilities id
            let code, out, err = runLora (args @ [ "--json" ] @ images)
            Expect.equal (code, err) (0, "") "ok"
            let byConfigPath = args |> List.map (fun a -> if a = fixture "peft_lora_vit_tiny" then Path.Combine(a, "adapter_config.json") else a)
            Expect.equal (runLora (byConfigPath @ [ "--json" ] @ images)) (code, out, err) "--adapter also takes the path of the folder's adapter_config.json, as merge does"
            let json = Text.Json.Nodes.JsonNode.Parse(out).AsArray()
            Expect.equal json.Count 2 "one entry per image"
            for i in 0 .. 1 do
                Expect.equal (json.[i].["image"].GetValue<string>()) images.[i] "image path"
                let preds = json.[i].["predictions"].AsArray() |> Seq.toList
                let want = expected.[i] |> Array.mapi (fun c p -> c, p) |> Array.sortByDescending snd |> Array.take 3
                Expect.equal (preds |> List.map (fun p -> p.["index"].GetValue<int>())) (want |> Array.map fst |> Array.toList) $"image {i}: the top-3 classes"
                Expect.equal (preds |> List.map (fun p -> p.["label"].GetValue<string>())) (want |> Array.map (fun (c, _) -> labels.[c]) |> Array.toList) $"image {i}: labels from the file"
                for p, (_, w) in List.zip preds (Array.toList want) do
                    Expect.floatClose { absolute = 1e-5; relative = 0.0 } (p.["score"].GetValue<float>()) w $"image {i}: score"
            let code, text, _ = runLora (args @ images)
            Expect.equal code 0 "text ok"
            let lines = text.TrimEnd('\n').Split('\n')
            Expect.equal lines.Length 8 "per image: its path and 3 lines"
            Expect.equal lines.[4] images.[1] "second image's header"
            let c, p = expected.[1] |> Array.mapi (fun c p -> c, p) |> Array.maxBy snd
            Expect.equal lines.[5] (sprintf "  %s  %s" labels.[c] (p.ToString("0.0000", Globalization.CultureInfo.InvariantCulture))) "best label and confidence"
        }
        test "--mean and --std normalise the pixels" {
            use dir = new TempDir()
            let image = dir.File "img.png"
            Lora.Core.Data.Png.Write(image, ReadOnlySpan testImages.[1], 3, 32, 32)
            let code, out, err =
                runLora [ "predict"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; fixture "vit_tiny_p4_32.safetensors"
                          "--adapter"; fixture "peft_lora_vit_tiny"; "--top-k"; "10"; "--mean"; "0.5,0.4,0.3"; "--std"; "0.2, 0.25,0.3"; "--json"; image ]
            Expect.equal (code, err) (0, "") "ok"
            let expected =
                expectedProbabilities (fun x ->
                    use m = torch.tensor([| 0.5f; 0.4f; 0.3f |]).reshape(1L, 3L, 1L, 1L)
                    use s = torch.tensor([| 0.2f; 0.25f; 0.3f |]).reshape(1L, 3L, 1L, 1L)
                    (x - m) / s)
            let plain = expectedProbabilities id
            let preds = Text.Json.Nodes.JsonNode.Parse(out).AsArray().[0].["predictions"].AsArray()
            Expect.equal preds.Count 10 "--top-k 10: ten predictions"
            for p in preds do
                let c = p.["index"].GetValue<int>()
                Expect.floatClose { absolute = 1e-5; relative = 0.0 } (p.["score"].GetValue<float>()) expected.[1].[c] $"class {c}: normalised"
            Expect.isGreaterThan (Array.map2 (fun a b -> abs (a - b)) expected.[1] plain.[1] |> Array.max) 1e-3 "normalising changes the scores"
        }
        test "bad images, labels and options: one line each" {
            use dir = new TempDir()
            let good = dir.File "good.png"
            Lora.Core.Data.Png.Write(good, ReadOnlySpan testImages.[0], 3, 32, 32)
            File.WriteAllBytes(dir.File "garbage.png", Array.init 100 byte)
            File.WriteAllLines(dir.File "three.txt", [ "a"; "b"; "c" ])
            let baseArgs = [ "predict"; "--model"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--weights"; fixture "vit_tiny_p4_32.safetensors" ]
            for args, code, expected in
                [ baseArgs @ [ dir.File "missing.png" ], 1, "image not found"
                  baseArgs @ [ dir.File "garbage.png" ], 1, "cannot decode the image"
                  baseArgs @ [ "--labels"; dir.File "three.txt"; good ], 1, "3 labels given but the model predicts 10 classes"
                  baseArgs @ [ "--top-k"; "0"; good ], 2, "--top-k must be at least 1"
                  [ "predict"; "--model"; "vit"; good ], 2, "--weights is required"
                  baseArgs, 2, "no images given"
                  baseArgs @ [ "--mean"; "a,b,c"; good ], 2, "--mean must be comma-separated numbers"
                  baseArgs @ [ "--std"; "0.5"; good ], 2, "one value per channel (3)"
                  [ "predict"; "--model"; "unet"; "--weights"; fixture "vit_tiny_p4_32.safetensors"; good ], 2, "is not an image classifier" ] do
                let c, out, err = runLora args
                Expect.equal c code $"exit code for {expected}"
                Expect.equal out "" "nothing on stdout"
                Expect.stringContains (oneLine err) expected "message"
        }
    ]

/// A spec whose Fashion-MNIST folder exists (a temporary one), so these tests need no package.
let private specIn (dir: TempDir) (text: string) =
    let data = dir.File "fm"
    Directory.CreateDirectory data |> ignore
    let path = dir.File "spec.yaml"
    File.WriteAllText(path, text.Replace("source: fashion_mnist", sprintf "source: fashion_mnist, path: '%s'" data))
    path

let private twoSteps =
    """pretrain:
  - name: used
    model: { zoo: vit, options: { img_size: 28, patch_size: 4, in_chans: 1, num_classes: 5 } }
    dataset: { source: fashion_mnist, classes: [0, 1, 2, 3, 4] }
  - name: spare
    model: { zoo: vit, options: { img_size: 28, patch_size: 4, in_chans: 1, num_classes: 5 } }
    dataset: { source: fashion_mnist }
experiments:
  - name: e
    model: { pretrain: used }
    dataset: { source: fashion_mnist, classes: [5, 6, 7, 8, 9] }
    methods: [head]
"""

let private validateTests =
    testList "validate" [
        test "a class beyond the data set: exit 2, one line with file:line:col, field and the valid range" {
            use dir = new TempDir()
            let spec = specIn dir (twoSteps.Replace("classes: [5, 6, 7, 8, 9]", "classes: [5, 12]"))
            let code, out, err = runLora [ "validate"; spec ]
            Expect.equal (code, out) (2, "") "exit 2, nothing on stdout"
            let lines = err.TrimEnd('\n').Split('\n')
            let line = lines |> Array.find (fun l -> not (l.Contains ": warning: "))
            let col = File.ReadAllLines(spec).[10].IndexOf "12]" + 1
            Expect.equal line (sprintf "%s:11:%d: experiments[0].datasets[0].classes[1]: class 12 is outside Fashion-MNIST's 10 classes: use 0-9" spec col)
                "the error line, at the 12"
            Expect.stringContains err ": warning: pretrain[1]: pretrain step 'spare' is not used" "the warning is printed too"
        }
        test "an unused pretrain step: exit 0, ok on stdout, one warning line on stderr" {
            use dir = new TempDir()
            let spec = specIn dir twoSteps
            let code, out, err = runLora [ "validate"; spec ]
            Expect.equal code 0 "warnings do not fail validation"
            Expect.equal out (sprintf "%s: ok (1 experiment(s), 2 run(s))\n" spec) "ok"
            Expect.equal (oneLine err)
                (sprintf "%s:5:5: warning: pretrain[1]: pretrain step 'spare' is not used by any experiment: use it as a base model, model: { pretrain: spare }, or remove it" spec)
                "the warning"
            let code, out, err = runLora [ "plan"; spec; "--results"; dir.File "results" ]
            Expect.equal code 0 "plan goes on"
            Expect.stringContains out "pretrain/used" "the used step is planned"
            Expect.isFalse (out.Contains "spare") "the unused step is not planned"
            Expect.stringContains (oneLine err) "warning: pretrain[1]: pretrain step 'spare'" "plan shows the warning"
        }
        test "an unused pretrain step with a typo is an error" {
            use dir = new TempDir()
            let spec = specIn dir (twoSteps.Replace("    dataset: { source: fashion_mnist }\n", "    dataset: { source: fashion_mnist, shots: 0 }\n"))
            let code, _, err = runLora [ "validate"; spec ]
            Expect.equal code 2 "exit 2"
            Expect.stringContains err (sprintf "%s:7:" spec) "located in the unused step"
            Expect.stringContains err "pretrain[1].dataset.shots: shots must be positive, got 0" "field and message"
        }
    ]

let tests = testList "Cli" [ summaryTests; mergeTests; predictTests; validateTests ]
