/// Every adapter_config.json this project writes, checked against PEFT's config rules: the fields,
/// types and required values that PEFT's LoraConfig (src/peft/tuners/lora/config.py) and
/// AdaLoraConfig (src/peft/tuners/adalora/config.py) declare and enforce in __post_init__, plus what
/// loading into a timm model needs (PEFT has no default target_modules for it). BOTTLENECK_ADAPTER
/// is this project's own peft_type (PEFT has no bottleneck adapter); its fields are checked too.
module Lora.Tests.PeftConfigTests

open System.IO
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto
open Lora.Core.Tuning
open Lora.Tests.Generators
open Lora.Tests.TuningModels

let private field (c: JsonObject) (name: string) : JsonNode option =
    let mutable v: JsonNode = null
    if c.TryGetPropertyValue(name, &v) && not (isNull v) then Some v else None

let private kind (n: JsonNode) = n.GetValueKind()
let private isBool (n: JsonNode) = kind n = System.Text.Json.JsonValueKind.True || kind n = System.Text.Json.JsonValueKind.False
let private isStr (n: JsonNode) = kind n = System.Text.Json.JsonValueKind.String
let private isNum (n: JsonNode) = kind n = System.Text.Json.JsonValueKind.Number
// JSON numbers as written (an int node holds an int, a parsed one a JsonElement)
let private num (n: JsonNode) = System.Double.Parse(n.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture)
let private isInt (n: JsonNode) = isNum n && (let d = num n in d = floor d)
let private str (n: JsonNode) = n.GetValue<string>()
let private isList (item: JsonNode -> bool) (n: JsonNode) = (n :? JsonArray) && (n.AsArray() |> Seq.forall (fun x -> not (isNull x) && item x))
let private isDict (value: JsonNode -> bool) (n: JsonNode) = (n :? JsonObject) && (n.AsObject() |> Seq.forall (fun kv -> not (isNull kv.Value) && value kv.Value))
/// a plain name: PEFT matches list entries as names or dotted suffixes, never as `re:` patterns
let private isName (n: JsonNode) = isStr n && not ((str n).StartsWith "re:")

/// One of PEFT's rules: the peft_types it applies to, the field, the rule in words, the check
/// (given the field's value, None when absent or null, and the whole config).
type Rule = { Types: string list; Field: string; Says: string; Holds: JsonNode option -> JsonObject -> bool }

let private lora = [ "LORA"; "ADALORA" ]
let private rule types name says holds = { Types = types; Field = name; Says = says; Holds = holds }
let private optional check = function None -> true | Some v -> check v
let private required check = function None -> false | Some v -> check v

/// PeftType names PEFT's PeftConfig.from_pretrained can load (the ones relevant here) and this
/// project's own.
let peftTypes = set [ "LORA"; "ADALORA"; "IA3"; "LOHA"; "LOKR"; "LN_TUNING"; "VERA"; "OFT"; "BOFT"; "HRA" ]
let ownTypes = set [ "BOTTLENECK_ADAPTER"; "BITFIT"; "SSF"; "ADAPTFORMER"; "VPT"; "CONVPASS"; "FACT" ]
/// PEFT's LoHaConfig and LoKrConfig (src/peft/tuners/{loha,lokr}/config.py, lycoris_utils.LycorisConfig)
let private lycoris = [ "LOHA"; "LOKR" ]
/// the PEFT types beside LoRA's: their PeftConfig fields and required target_modules
let private others = [ "IA3"; "LOHA"; "LOKR"; "LN_TUNING"; "VERA"; "OFT"; "BOFT"; "HRA" ]
let private strSet (n: JsonNode) = n.AsArray() |> Seq.map str |> Set.ofSeq

let rules : Rule list =
    [ rule (lora @ List.ofSeq ownTypes) "peft_type" "a PeftType name" (fun v _ -> required isStr v)
      rule lora "task_type" "null or a TaskType" (fun v _ ->
          optional (fun v -> isStr v && List.contains (str v) [ "SEQ_CLS"; "SEQ_2_SEQ_LM"; "CAUSAL_LM"; "TOKEN_CLS"; "QUESTION_ANS"; "FEATURE_EXTRACTION" ]) v)
      rule lora "base_model_name_or_path" "null or a string" (fun v _ -> optional isStr v)
      rule lora "inference_mode" "a bool" (fun v _ -> optional isBool v)
      rule lora "r" "an int > 0 (LoraLayer.update_layer)" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule lora "target_modules" "a list of names/suffixes or one regex string; required for a timm model (PEFT has no default for it)"
          (fun v _ -> required (fun v -> (isStr v && str v <> "") || (isList isName v && v.AsArray().Count > 0)) v)
      rule lora "exclude_modules" "null, a list of names or a regex string" (fun v _ -> optional (fun v -> isStr v || isList isName v) v)
      rule lora "lora_alpha" "a number" (fun v _ -> required isNum v)
      rule lora "lora_dropout" "a number in [0, 1)" (fun v _ -> optional (fun v -> isNum v && num v >= 0.0 && num v < 1.0) v)
      rule lora "fan_in_fan_out" "a bool" (fun v _ -> optional isBool v)
      rule lora "bias" "none, all or lora_only" (fun v _ -> optional (fun v -> isStr v && List.contains (str v) [ "none"; "all"; "lora_only" ]) v)
      rule lora "use_rslora" "a bool" (fun v _ -> optional isBool v)
      rule lora "modules_to_save" "null or a list of module names (matched as suffixes, no regex)" (fun v _ -> optional (isList isName) v)
      rule lora "init_lora_weights" "a bool, gaussian, olora, pissa, pissa_niter_N, loftq, eva, corda or orthogonal"
          (fun v _ -> optional (fun v -> isBool v || (isStr v && (List.contains (str v) [ "gaussian"; "olora"; "pissa"; "loftq"; "eva"; "corda"; "orthogonal" ] || Regex.IsMatch(str v, "^pissa_niter_[0-9]+$")))) v)
      rule lora "loftq_config" "given when init_lora_weights is loftq" (fun v c ->
          match field c "init_lora_weights" with Some w when isStr w && str w = "loftq" -> v.IsSome | _ -> true)
      rule lora "layers_to_transform" "null when target_modules is a str; given with layers_pattern" (fun v c ->
          (v.IsNone || not (field c "target_modules" |> Option.exists isStr)) && (v.IsSome = (field c "layers_pattern").IsSome))
      rule lora "layers_pattern" "null when target_modules is a str" (fun v c -> v.IsNone || not (field c "target_modules" |> Option.exists isStr))
      rule lora "alpha_pattern" "a dict of numbers" (fun v _ -> optional (isDict isNum) v)
      rule lora "use_dora" "a bool" (fun v _ -> optional isBool v)
      rule [ "LORA" ] "rank_pattern" "a dict of ints > 0" (fun v _ -> optional (isDict (fun r -> isInt r && num r > 0.0)) v)
      rule [ "ADALORA" ] "use_dora" "false (AdaLoRA does not support DoRA)" (fun v _ -> optional (fun v -> isBool v && not (v.GetValue<bool>())) v)
      rule [ "ADALORA" ] "loftq_config" "empty (AdaLoRA does not support LoftQ)" (fun v _ -> optional (fun (v: JsonNode) -> (v :? JsonObject) && v.AsObject().Count = 0) v)
      rule [ "ADALORA" ] "target_r" "an int > 0" (fun v _ -> optional (fun v -> isInt v && num v > 0.0) v)
      rule [ "ADALORA" ] "init_r" "an int > 0" (fun v _ -> optional (fun v -> isInt v && num v > 0.0) v)
      rule [ "ADALORA" ] "tinit" "an int >= 0" (fun v _ -> optional (fun v -> isInt v && num v >= 0.0) v)
      rule [ "ADALORA" ] "tfinal" "an int >= 0" (fun v _ -> optional (fun v -> isInt v && num v >= 0.0) v)
      rule [ "ADALORA" ] "deltaT" "an int > 0" (fun v _ -> optional (fun v -> isInt v && num v > 0.0) v)
      rule [ "ADALORA" ] "beta1" "a number" (fun v _ -> optional isNum v)
      rule [ "ADALORA" ] "beta2" "a number" (fun v _ -> optional isNum v)
      rule [ "ADALORA" ] "orth_reg_weight" "a number" (fun v _ -> optional isNum v)
      rule [ "ADALORA" ] "total_step" "an int > 0 (\"AdaLoRA does not work when `total_step` is None\")" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule [ "ADALORA" ] "tinit" "tinit < total_step - tfinal (a budgeting phase)" (fun _ c ->
          match field c "total_step", field c "tinit", field c "tfinal" with
          | Some t, ti, tf when isNum t ->
              let n o = match o with Some x when isNum x -> num x | _ -> 0.0
              n ti < num t - n tf
          | _ -> true)
      rule [ "ADALORA" ] "rank_pattern" "null or a dict of bool lists" (fun v _ -> optional (isDict (isList isBool)) v)
      rule others "peft_type" "a PeftType name" (fun v _ -> required isStr v)
      rule others "task_type" "null (a vision model has no TaskType)" (fun v _ -> optional (fun _ -> false) v)
      rule others "inference_mode" "a bool" (fun v _ -> optional isBool v)
      rule others "target_modules" "a list of names/suffixes or one regex string; required for a timm model (PEFT has no default for it)"
          (fun v _ -> required (fun v -> (isStr v && str v <> "") || (isList isName v && v.AsArray().Count > 0)) v)
      rule others "modules_to_save" "null or a list of module names (matched as suffixes, no regex)" (fun v _ -> optional (isList isName) v)
      rule others "exclude_modules" "null, a list of names or a regex string" (fun v _ -> optional (fun v -> isStr v || isList isName v) v)
      rule [ "IA3" ] "feedforward_modules" "a list of names or a regex string" (fun v _ -> optional (fun v -> isStr v || isList isName v) v)
      rule [ "IA3" ] "feedforward_modules" "a subset of target_modules (IA3Config.__post_init__)" (fun v c ->
          match v, field c "target_modules" with
          | Some f, Some t when (f :? JsonArray) && (t :? JsonArray) -> Set.isSubset (strSet f) (strSet t)
          | _ -> true)
      rule [ "IA3" ] "fan_in_fan_out" "a bool" (fun v _ -> optional isBool v)
      rule [ "IA3" ] "init_ia3_weights" "a bool" (fun v _ -> optional isBool v)
      rule lycoris "r" "an int > 0 (update_layer)" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule lycoris "alpha" "a number" (fun v _ -> required isNum v)
      rule lycoris "rank_dropout" "a number in [0, 1]" (fun v _ -> optional (fun v -> isNum v && num v >= 0.0 && num v <= 1.0) v)
      rule lycoris "module_dropout" "a number in [0, 1]" (fun v _ -> optional (fun v -> isNum v && num v >= 0.0 && num v <= 1.0) v)
      rule lycoris "use_effective_conv2d" "a bool" (fun v _ -> optional isBool v)
      rule lycoris "rank_pattern" "a dict of ints > 0" (fun v _ -> optional (isDict (fun r -> isInt r && num r > 0.0)) v)
      rule lycoris "alpha_pattern" "a dict of numbers" (fun v _ -> optional (isDict isNum) v)
      rule [ "LOHA" ] "init_weights" "a bool" (fun v _ -> optional isBool v)
      rule [ "LOKR" ] "init_weights" "a bool or lycoris" (fun v _ -> optional (fun v -> isBool v || (isStr v && str v = "lycoris")) v)
      rule [ "LOKR" ] "decompose_both" "a bool" (fun v _ -> optional isBool v)
      rule [ "LOKR" ] "decompose_factor" "an int, -1 or > 0" (fun v _ -> optional (fun v -> isInt v && (num v = -1.0 || num v > 0.0)) v)
      rule [ "LOKR" ] "rank_dropout_scale" "a bool" (fun v _ -> optional isBool v)
      rule [ "VERA" ] "r" "an int > 0" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule [ "VERA" ] "projection_prng_key" "an int" (fun v _ -> optional isInt v)
      rule [ "VERA" ] "save_projection" "a bool" (fun v _ -> optional isBool v)
      rule [ "VERA" ] "vera_dropout" "a number in [0, 1)" (fun v _ -> optional (fun v -> isNum v && num v >= 0.0 && num v < 1.0) v)
      rule [ "VERA" ] "d_initial" "a number" (fun v _ -> optional isNum v)
      rule [ "VERA" ] "bias" "none, all or vera_only" (fun v _ -> optional (fun v -> isStr v && List.contains (str v) [ "none"; "all"; "vera_only" ]) v)
      rule [ "VERA" ] "init_weights" "a bool" (fun v _ -> optional isBool v)
      // PEFT's OFTConfig (src/peft/tuners/oft/config.py): __post_init__ and check_kwargs
      rule [ "OFT" ] "r" "an int >= 0" (fun v _ -> optional (fun v -> isInt v && num v >= 0.0) v)
      rule [ "OFT" ] "oft_block_size" "an int >= 0, present (check_kwargs: else a pre-0.14 adapter)" (fun v _ -> required (fun v -> isInt v && num v >= 0.0) v)
      rule [ "OFT" ] "oft_block_size" "exactly one of r and oft_block_size non-zero" (fun _ c ->
          let nz f = match field c f with Some v when isNum v -> num v <> 0.0 | _ -> false
          nz "r" <> nz "oft_block_size")
      rule [ "OFT" ] "module_dropout" "a number" (fun v _ -> optional isNum v)
      rule [ "OFT" ] "fan_in_fan_out" "a bool" (fun v _ -> optional isBool v)
      rule [ "OFT" ] "bias" "none, all or oft_only" (fun v _ -> optional (fun v -> isStr v && List.contains (str v) [ "none"; "all"; "oft_only" ]) v)
      rule [ "OFT" ] "init_weights" "a bool" (fun v _ -> optional isBool v)
      rule [ "OFT" ] "coft" "a bool" (fun v _ -> optional isBool v)
      rule [ "OFT" ] "eps" "a number" (fun v _ -> optional isNum v)
      rule [ "OFT" ] "block_share" "a bool" (fun v _ -> optional isBool v)
      rule [ "OFT" ] "use_cayley_neumann" "a bool" (fun v _ -> optional isBool v)
      rule [ "OFT" ] "num_cayley_neumann_terms" "an int" (fun v _ -> optional isInt v)
      rule [ "OFT" ] "peft_version" "≥ 0.18 with use_cayley_neumann (else PEFT warns the series changed)" (fun v c ->
          match field c "use_cayley_neumann" with
          | Some u when isBool u && u.GetValue<bool>() ->
              v |> Option.exists (fun v -> isStr v && System.Version.Parse((str v).Split('@').[0]) >= System.Version(0, 18, 0))
          | _ -> true)
      rule [ "OFT" ] "layers_pattern" "given only with layers_to_transform" (fun v c -> v.IsNone || (field c "layers_to_transform").IsSome)
      // PEFT's BOFTConfig and HRAConfig (src/peft/tuners/{boft,hra}/config.py)
      rule [ "BOFT" ] "boft_block_size" "an int >= 0" (fun v _ -> optional (fun v -> isInt v && num v >= 0.0) v)
      rule [ "BOFT" ] "boft_block_num" "an int >= 0" (fun v _ -> optional (fun v -> isInt v && num v >= 0.0) v)
      rule [ "BOFT" ] "boft_block_size" "exactly one of boft_block_size (default 4) and boft_block_num non-zero" (fun _ c ->
          let value f d = match field c f with Some v when isNum v -> num v | _ -> d
          (value "boft_block_size" 4.0 <> 0.0) <> (value "boft_block_num" 0.0 <> 0.0))
      rule [ "BOFT" ] "boft_n_butterfly_factor" "an int >= 1" (fun v _ -> optional (fun v -> isInt v && num v >= 1.0) v)
      rule [ "BOFT" ] "boft_dropout" "a number" (fun v _ -> optional isNum v)
      rule [ "BOFT" ] "bias" "none, all or boft_only" (fun v _ -> optional (fun v -> isStr v && List.contains (str v) [ "none"; "all"; "boft_only" ]) v)
      rule [ "BOFT" ] "fan_in_fan_out" "a bool" (fun v _ -> optional isBool v)
      rule [ "BOFT"; "HRA" ] "init_weights" "a bool" (fun v _ -> optional isBool v)
      rule [ "BOFT"; "HRA" ] "layers_pattern" "given only with layers_to_transform" (fun v c -> v.IsNone || (field c "layers_to_transform").IsSome)
      rule [ "HRA" ] "r" "an int > 0 (update_layer)" (fun v _ -> optional (fun v -> isInt v && num v > 0.0) v)
      rule [ "HRA" ] "apply_GS" "a bool" (fun v _ -> optional isBool v)
      rule [ "HRA" ] "bias" "none, all or hra_only" (fun v _ -> optional (fun v -> isStr v && List.contains (str v) [ "none"; "all"; "hra_only" ]) v)
      rule [ "HRA" ] "layers_to_transform" "null when target_modules is a str" (fun v c -> v.IsNone || not (field c "target_modules" |> Option.exists isStr))
      rule [ "ADAPTFORMER" ] "ffn_num" "an int > 0" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule [ "ADAPTFORMER" ] "ffn_adapter_scalar" "a number > 0" (fun v _ -> required (fun v -> isNum v && num v > 0.0) v)
      rule [ "VPT" ] "num_tokens" "an int > 0" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule [ "VPT" ] "vpt_type" "shallow or deep" (fun v _ -> required (fun v -> isStr v && List.contains (str v) [ "shallow"; "deep" ]) v)
      rule [ "CONVPASS" ] "dim" "an int > 0" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule [ "CONVPASS" ] "s" "a number > 0" (fun v _ -> required (fun v -> isNum v && num v > 0.0) v)
      rule [ "FACT" ] "r" "an int > 0" (fun v _ -> required (fun v -> isInt v && num v > 0.0) v)
      rule [ "FACT" ] "fact_type" "tt or tk" (fun v _ -> required (fun v -> isStr v && List.contains (str v) [ "tt"; "tk" ]) v)
      rule [ "BITFIT"; "SSF" ] "target_modules" "the list of tuned modules" (fun v _ -> required (fun v -> isList isName v && v.AsArray().Count > 0) v)
      rule [ "SSF" ] "init_std" "a number >= 0" (fun v _ -> required (fun v -> isNum v && num v >= 0.0) v)
      rule [ "BOTTLENECK_ADAPTER" ] "adapter_ratio" "a number > 0" (fun v _ -> required (fun v -> isNum v && num v > 0.0) v)
      rule [ "BOTTLENECK_ADAPTER" ] "adapter_width" "null or an int >= 0 (0: from adapter_ratio)" (fun v _ -> optional (fun v -> isInt v && num v >= 0.0) v)
      rule [ "BOTTLENECK_ADAPTER" ] "adapter_mlp_scale" "a number" (fun v _ -> required isNum v)
      rule [ "BOTTLENECK_ADAPTER" ] "adapter_init_identity" "a bool" (fun v _ -> required isBool v) ]

/// Every rule the config breaks, as "field: rule"; an unknown peft_type is one problem.
let violations (config: JsonObject) : string list =
    match field config "peft_type" with
    | Some t when isStr t && (peftTypes.Contains(str t) || ownTypes.Contains(str t)) ->
        [ for r in rules do
              if List.contains (str t) r.Types && not (r.Holds (field config r.Field) config) then
                  yield sprintf "%s: must be %s (got %s)" r.Field r.Says (match field config r.Field with Some v -> v.ToJsonString() | None -> "null") ]
    | t -> [ sprintf "peft_type: not a type PEFT (or this project) knows (got %A)" (t |> Option.map (fun v -> v.ToJsonString())) ]

let private saved (config: TuningConfig) (prepare: TunedModel -> unit) =
    let m = vitTiny ()
    let t = Tuner.Apply(m, config)
    prepare t
    use dir = new TempDir()
    AdapterCheckpoint.Save(t, dir.Path)
    JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, AdapterCheckpoint.ConfigFile))).AsObject()

let private configs : (string * TuningConfig * (TunedModel -> unit)) list =
    [ "LoRA", LoraConfig(Targets = [| "qkv"; "fc1" |], Rank = 2, Alpha = 4.0, ModulesToSave = [| "head" |]), ignore
      "LoRA, bias all, rsLoRA, gaussian", LoraConfig(Targets = [| "proj" |], Rank = 3, Bias = BiasMode.All, UseRsLora = true, InitGaussian = true), ignore
      "LoRA, a regex and a name", LoraConfig(Targets = [| @"re:blocks\.0\.attn\.qkv"; "fc2" |], Rank = 2), ignore
      "DoRA", LoraConfig(UseDora = true, Targets = [| "qkv" |], Rank = 2, ModulesToSave = [| "re:he.d" |]), ignore
      "AdaLoRA, untrained", AdaLoraConfig(Targets = [| "qkv" |], InitRank = 4, TargetRank = 2, TInit = 3, TFinal = 2), ignore
      "AdaLoRA, after the training loop set its steps",
      AdaLoraConfig(Targets = [| "qkv" |], InitRank = 4, TargetRank = 2, TInit = 3, TFinal = 2),
      (fun (t: TunedModel) -> (StepHooks.Of(t.Model) |> Seq.exactlyOne).Begin 40L)
      "AdaLoRA on a Conv2d and Linear layers, trained to a rank pattern",
      AdaLoraConfig(Targets = [| "patch_embed.proj"; "qkv" |], InitRank = 4, TargetRank = 2, TotalStep = 3L),
      (fun (t: TunedModel) ->
          let hook = StepHooks.Of(t.Model) |> Seq.exactlyOne
          for p in t.TrainableParameters() do p.grad <- TorchSharp.torch.randn_like(p)
          for s in 1L .. 3L do hook.AfterOptimizerStep s)
      "Adapter", BottleneckAdapterConfig(ModulesToSave = [| "head" |]), ignore
      "BitFit", BitFitConfig(ModulesToSave = [| "head" |]), ignore
      "LN tuning", LnTuningConfig(), ignore
      "(IA)³", Ia3Config(Targets = [| "qkv"; "fc2" |], FeedforwardModules = [| "fc2" |], ModulesToSave = [| "head" |]), ignore
      "SSF", SsfConfig(), ignore
      "LoHa", LoHaConfig(Targets = [| "qkv" |], Rank = 2, Alpha = 4.0), ignore
      "LoHa, effective conv2d", LoHaConfig(Targets = [| "patch_embed.proj" |], Rank = 2, UseEffectiveConv2d = true), ignore
      "LoKr", LoKrConfig(Targets = [| "qkv"; "fc1" |], Rank = 2, DecomposeBoth = true), ignore
      "AdaptFormer", AdaptFormerConfig(Width = 4, ModulesToSave = [| "head" |]), ignore
      "VeRA", VeraConfig(Targets = [| "qkv"; "fc1" |], Rank = 4, ModulesToSave = [| "head" |]), ignore
      "OFT", OftConfig(Targets = [| "qkv"; "patch_embed.proj" |], BlockSize = 4, ModulesToSave = [| "head" |]), ignore
      "OFT, r, COFT, shared, exact Cayley", OftConfig(Targets = [| "fc1" |], Rank = 2, BlockSize = 0, Coft = true, BlockShare = true, UseCayleyNeumann = false), ignore
      "BOFT", BoftConfig(Targets = [| "qkv" |], BlockSize = 4, ButterflyFactor = 2, ModulesToSave = [| "head" |]), ignore
      "BOFT, block count", BoftConfig(Targets = [| "fc1" |], BlockSize = 0, BlockNum = 4), ignore
      "HRA", HraConfig(Targets = [| "qkv"; "fc1" |], Rank = 4, ApplyGs = true), ignore ]

let tests =
    testList "PeftConfig" [
        for name, config, prepare in configs do
            yield test $"{name}: adapter_config.json passes PEFT's config rules" {
                let json = saved config prepare
                Expect.equal (violations json) [] $"PEFT's rules hold for\n{json.ToJsonString()}"
            }
        yield test "AdaLoRA's total_step: the training loop's steps, else the shortest schedule PEFT accepts" {
            let untrained = saved (AdaLoraConfig(Targets = [| "qkv" |], InitRank = 4, TargetRank = 2, TInit = 3, TFinal = 2)) ignore
            Expect.equal (untrained["total_step"].GetValue<int64>()) 6L "tinit + tfinal + 1"
            let trained =
                saved (AdaLoraConfig(Targets = [| "qkv" |], InitRank = 4, TargetRank = 2))
                      (fun (t: TunedModel) -> (StepHooks.Of(t.Model) |> Seq.exactlyOne).Begin 40L)
            Expect.equal (trained["total_step"].GetValue<int64>()) 40L "the steps the loop set"
        }
        yield test "target_modules and modules_to_save with regexes select, under PEFT's matching, the modules this project tuned" {
            let json = saved (LoraConfig(Targets = [| @"re:blocks\.0\.attn\.qkv"; "fc2" |], Rank = 2, ModulesToSave = [| "re:he.d" |])) ignore
            let regex = json["target_modules"].GetValue<string>()
            let paths = (vitTiny ()).named_modules() |> Seq.map (fun struct (n, _) -> n) |> Seq.filter ((<>) "") |> List.ofSeq
            // PEFT: re.fullmatch(target_modules, key)
            let peft = paths |> List.filter (fun p -> Regex.IsMatch(p, "^(?:" + regex + ")$"))
            let ours = paths |> List.filter (fun p -> ModulePattern.Matches(@"re:blocks\.0\.attn\.qkv", p) || ModulePattern.Matches("fc2", p))
            Expect.equal peft ours "the same modules"
            Expect.isNonEmpty ours "some modules"
            Expect.equal (json["modules_to_save"].ToJsonString()) "[\"head\"]" "the regex written as the module it matched"
        }
        yield test "the bottleneck Adapter's peft_type is this project's own, not PEFT's" {
            let json = saved (BottleneckAdapterConfig()) ignore
            Expect.equal (json["peft_type"].GetValue<string>()) "BOTTLENECK_ADAPTER" "own type"
            Expect.isFalse (peftTypes.Contains "BOTTLENECK_ADAPTER") "not among PEFT's"
        }
        yield test "the checker fails configs PEFT rejects" {
            let good = saved (AdaLoraConfig(Targets = [| "qkv" |], InitRank = 4, TargetRank = 2, TotalStep = 50L)) ignore
            let broken (edit: JsonObject -> unit) =
                let c = good.DeepClone().AsObject()
                edit c
                violations c
            Expect.equal (violations good) [] "the untouched config passes"
            for fieldName, edit in
                [ "total_step", (fun (c: JsonObject) -> c["total_step"] <- null)
                  "tinit", (fun c -> c["tinit"] <- JsonValue.Create 45; c["tfinal"] <- JsonValue.Create 5)
                  "use_dora", (fun c -> c["use_dora"] <- JsonValue.Create true)
                  "r", (fun c -> c["r"] <- JsonValue.Create 0)
                  "target_modules", (fun c -> c["target_modules"] <- null)
                  "target_modules", (fun c -> c["target_modules"] <- JsonArray(JsonValue.Create "re:qkv"))
                  "bias", (fun c -> c["bias"] <- JsonValue.Create "some")
                  "modules_to_save", (fun c -> c["modules_to_save"] <- JsonValue.Create "head")
                  "peft_type", (fun c -> c["peft_type"] <- JsonValue.Create "LORRA") ] do
                let v = broken edit
                Expect.isTrue (v |> List.exists (fun s -> s.StartsWith(fieldName + ":"))) $"{fieldName} flagged: {v}"
        }
    ]
