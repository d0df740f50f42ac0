/// One conversion from a spec's run to core objects (Lora.Conversion.ToCore): `run`, `summary`,
/// `bench` and `validate` decide each default and limit in the same place. Each test pins one of the
/// disagreements the three earlier copies had.
module Lora.Tests.ConversionTests

open System.IO
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Lora.Dsl
open Lora.CommandLine
open Lora.Core.Models
open Lora.Core.Tuning
open Lora.Conversion
open Lora.Tests.Generators

let private vitOptions =
    Map.ofList [ "img_size", Int 16; "patch_size", Int 8; "in_chans", Int 3; "embed_dim", Int 32; "depth", Int 2; "num_heads", Int 2 ]

/// The tuning run a spec with this method and rank expands to (Grid fills the rank's defaults).
let private runOf (m: Method) (rank: int) =
    let e =
        { Name = "e"; Models = [ BaseModel.Zoo { Name = "vit"; Options = vitOptions } ]; Datasets = [ DatasetView.Of(FashionMnist None) ]
          Task = Classification; Methods = [ m ]; Ranks = [ rank ]; Seeds = [ 0 ]; Training = Training.Defaults; Tables = []; Sweeps = []; Variants = []; Combinations = [] }
    Grid.expand e |> List.exactlyOne

let private model () = Zoo.Create("vit", (ToCore.modelArgs { Name = "vit"; Options = vitOptions }).With("num_classes", 5L), torch.META)

let private summaryOptions (meth: string) (rank: int option) (train: string list) : SummaryOptions =
    { Model = "vit"; Method = meth; Rank = Option.toNullable rank; Alpha = System.Nullable(); Targets = []; Train = train
      Bias = "none"; InitRank = System.Nullable(); Classes = System.Nullable(); ModelConfig = null; Init = null; FusedQkv = [] }

let private configOf (m: CoreMethod) =
    match m with
    | CoreMethod.Tune c -> c
    | other -> failtestf "expected a tuning method, got %A" other

/// adapter_config.json as a method writes it: what a run's checkpoint would hold.
let private json (c: TuningConfig) = c.Method.WriteConfig(c, null, "default").ToJsonString()

let private fromRun (m: Method) (rank: int) = let md = model () in ToCore.ofRun (runOf m rank) md
let private fromSummary meth rank train =
    match SummaryMethod.toCore (summaryOptions meth rank train) (model ()) with
    | Ok m -> m
    | Error e -> failtestf "summary refused %s: %s" meth e
let private fromBench name rank = BenchMethods.methodOn name rank (model ())

let private trainable (m: CoreMethod) =
    use md = model ()
    let t = ToCore.apply m md
    (if isNull t then ParameterSummary.Of md else t.Summary()).Trainable

let tests =
    testList "Conversion" [
        test "a run and `lora summary` of the same method: the same adapter config and trainable count" {
            for meth, m in [ "lora", Lora LoraOptions.Defaults; "dora", Dora LoraOptions.Defaults
                             "adalora", AdaLora(LoraOptions.Defaults, AdaLoraOptions.Defaults) ] do
                let run = fromRun m 4
                let summary = fromSummary meth (Some 4) [ "head" ]
                Expect.equal (json (configOf summary)) (json (configOf run)) $"{meth}: adapter_config.json"
                Expect.equal (trainable summary) (trainable run) $"{meth}: trainable"
            let code, out, err = runLora [ "summary"; "vit"; "--model-config"; fixture "vit_tiny_p4_32.json"; "--method"; "lora"; "--rank"; "4"; "--train"; "head" ]
            Expect.equal (code, err) (0, "") "summary ok"
            Expect.stringContains out "LoRA r=4 alpha=8 on qkv, training head" "the spec's defaults: qkv, alpha = 2 × rank"
        }
        test "adapter: the MLP scale (1.0) and identity initialisation are the same for run, summary and bench" {
            let run = configOf (fromRun (Adapter AdapterOptions.Defaults) 4)
            let summary = configOf (fromSummary "adapter" (Some 4) [ "head" ])
            let bench = configOf (fromBench "adapter" 4)
            Expect.equal (json summary) (json run) "summary = run"
            Expect.equal (json bench) (json run) "bench = run"
            let o = JsonNode.Parse(json run)
            Expect.equal (o["adapter_mlp_scale"].GetValue<float>(), o["adapter_init_identity"].GetValue<bool>(), o["adapter_width"].GetValue<int>()) (1.0, true, 4)
                "scale 1, identity, width = rank"
        }
        test "AdaLoRA's default initial rank is ⌈1.5 r⌉ for run, summary and bench, odd r included" {
            for r in [ 1; 3; 4; 5; 8 ] do
                let initRank (m: CoreMethod) = (configOf m :?> AdaLoraConfig).InitRank
                let expected = int (ceil (1.5 * float r))
                Expect.equal (initRank (fromRun (AdaLora(LoraOptions.Defaults, AdaLoraOptions.Defaults)) r)) expected $"run, r={r}"
                Expect.equal (initRank (fromSummary "adalora" (Some r) [])) expected $"summary, r={r}"
                Expect.equal (initRank (fromBench "adalora" r)) expected $"bench, r={r}"
        }
        test "head only: a run and `lora summary --method head` train the same parameters" {
            let run = fromRun Head 4
            let summary = fromSummary "head" None []
            Expect.equal run summary "both train the classifier only"
            Expect.equal (trainable run) (32L * 5L + 5L) "head: 32·5 + 5"
        }
        test "adapter_init_identity is read back from adapter_config.json" {
            for identity in [ true; false ] do
                use dir = new TempDir()
                use m = Zoo.Create("vit", ModelArgs.FromFile(fixture "vit_tiny_p4_32.json"))
                let t = Tuner.Apply(m, BottleneckAdapterConfig(InitIdentity = identity, MlpScale = 0.5))
                AdapterCheckpoint.Save(t, dir.Path)
                let struct (c, _) = AdapterCheckpoint.ReadConfig dir.Path
                let c = c :?> BottleneckAdapterConfig
                Expect.equal (c.InitIdentity, c.MlpScale) (identity, 0.5) $"identity {identity} and the scale survive the round trip"
        }
        test "validate applies the conversion on the meta device: a rank the core refuses fails validation" {
            use dir = new TempDir()
            let spec = dir.File "spec.yaml"
            let data = dir.File "fm"
            Directory.CreateDirectory data |> ignore
            let lines =
                [ "experiments:"
                  "  - name: e"
                  "    model: { zoo: vit, options: { img_size: 16, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2 } }"
                  sprintf "    dataset: { source: fashion_mnist, path: '%s', classes: [0, 1] }" data
                  "    methods: [lora]"
                  "    ranks: [40]" ]
            File.WriteAllText(spec, String.concat "\n" lines + "\n")
            let code, out, err = runLora [ "validate"; spec ]
            Expect.equal (code, out) (2, "") "exit 2"
            Expect.stringContains err "e/lora-r40: rank 40 for 'blocks.0.attn.qkv' exceeds min(in_features, out_features) = 32" "names the run and the core's limit"
            let ok = spec.Replace("spec.yaml", "ok.yaml")
            File.WriteAllText(ok, File.ReadAllText(spec).Replace("ranks: [40]", "ranks: [4]"))
            let code, _, err = runLora [ "validate"; ok ]
            Expect.equal (code, err) (0, "") "rank 4 passes"
        }
        test "every zoo entry carries a model card: channels, size, normalisation, classifier, task" {
            for name in Zoo.Names do
                use m = Zoo.Create(name, device = torch.META)
                let card = Zoo.Card m
                // a featurizer (resnet18_mlnet without num_classes) has no head: its card says "" and Zoo.Classifier refuses
                if card.Classifier <> "" then Expect.equal card.Classifier (Zoo.Classifier m) $"{name}: the card names the classifier"
                else Expect.throwsT<System.ArgumentException> (fun () -> Zoo.Classifier m |> ignore) $"{name}: no head, no classifier"
                Expect.equal (card.Mean.Count, card.Std.Count) (int card.InChans, int card.InChans) $"{name}: one mean and std per channel"
                let segmenter = name = "unet" || name.StartsWith "sam" || name = "mobile_sam"
                Expect.equal card.Task (if segmenter then ModelTask.Segmentation else ModelTask.Classification) $"{name}: task"
            use vit = Zoo.Create("vit_base_patch16_224", device = torch.META)
            Expect.equal (Zoo.Card vit).InputSize (System.Nullable 224L) "ViT fixes its input size"
            use conv = Zoo.Create("convnext_tiny", device = torch.META)
            Expect.isFalse (Zoo.Card conv).InputSize.HasValue "ConvNeXt takes any size"
            use mobile = Zoo.Create("mobile_sam", device = torch.META)
            Expect.equal (Zoo.Card mobile).Backbone "TinyViT" "the tables' backbone label"
        }
    ]
