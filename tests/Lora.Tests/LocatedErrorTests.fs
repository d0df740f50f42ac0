/// Spec errors name the line that caused them: an F# spec's builder operations (every error at
/// once), and what the core would refuse when a run starts (`lora validate`), at the method's or
/// model's entry in YAML and F# alike.
module Lora.Tests.LocatedErrorTests

open System.IO
open Expecto
open Lora.Dsl
open Lora.Tests.Generators

let private vit = "zoo \"vit\" [ \"img_size\", Int 28; \"patch_size\", Int 4; \"in_chans\", Int 1; \"embed_dim\", Int 32; \"depth\", Int 1; \"num_heads\", Int 2 ]"

/// The errors of a spec written to a temporary folder: (file name, line, field, message).
let private errorsOf (check: string -> SpecCheck) (name: string) (lines: string list) =
    use dir = new TempDir()
    let path = dir.File name
    File.WriteAllText(path, String.concat "\n" lines + "\n")
    match (check path).Result with
    | Ok _ -> []
    | Error errs -> [ for e in errs -> Path.GetFileName e.File, e.Line, e.Field, e.Message ]

let private everything = Spec.checkWith (fun _ -> true)

let tests =
    testList "located errors" [
        test "an F# spec with two mistakes in two experiments gives both, each at its operation's line" {
            let errs =
                errorsOf everything "two.fsx"
                    [ "let experiments ="                                             // 1
                      "    [ experiment {"                                            // 2
                      "          name \"a\""                                          // 3
                      "          model (" + vit + ")"                                 // 4
                      "          dataset fashionMnist"                                // 5
                      "          methods [ lora ]"                                    // 6
                      "          ranks [ 4 ]"                                         // 7
                      "          epochs 0"                                            // 8
                      "      }"                                                       // 9
                      "      experiment {"                                            // 10
                      "          name \"b\""                                          // 11
                      "          model (" + vit + ")"                                 // 12
                      "          dataset fashionMnist"                                // 13
                      "          methods [ AdaLora(LoraOptions.Defaults, { AdaLoraOptions.Defaults with OrthReg = 0.0 }) ]" // 14
                      "          ranks [ 4 ]"                                         // 15
                      "      } ]" ]
            Expect.equal errs
                [ "two.fsx", 8, "experiments[0].epochs", "epochs must be at least 1, got 0"
                  "two.fsx", 14, "experiments[1].methods[0].orth_reg", "orth_reg must be positive, got 0" ]
                "both errors, at the lines of epochs and methods"
            use dir = new TempDir()
            let path = dir.File "two.fsx"
            File.WriteAllText(path, "let experiments = [ experiment { name \"a\"; model (zoo \"vit\" []); dataset fashionMnist; methods [ head ]; epochs 0 } ]\n")
            match (everything path).Result with
            | Error [ e ] -> Expect.equal (e.ToString()) (path + ":1: experiments[0].epochs: epochs must be at least 1, got 0") "printed FILE:LINE: field: message"
            | other -> failtestf "expected one error, got %A" other
        }
        test "F#: a pretrain step's error is at its own line, a variant's at the variants line, a non-zoo pretrain model at its model line" {
            // a step with epochs 0 (line 6), then `extra` lines, then an experiment on it with a variant of epochs 0
            let script (extra: string list) =
                [ "let base' ="                                                   // 1
                  "    pretrain {"                                                // 2
                  "        name \"p\""                                            // 3
                  "        model (" + vit + ")"                                   // 4
                  "        dataset fashionMnist"                                  // 5
                  "        epochs 0"                                              // 6
                  "    }" ]                                                       // 7
                @ extra
                @ [ "let experiments ="                                           // 8
                    "    [ experiment {"                                          // 9
                    "          name \"e\""                                        // 10
                    "          model (fromPretrain base')"                        // 11
                    "          dataset fashionMnist"                              // 12
                    "          methods [ head ]"                                  // 13
                    "          variants [ lora |> named \"fast\" |> withEpochs 0 ]" // 14
                    "          ranks [ 4 ]"                                       // 15
                    "      } ]" ]
            let errs = errorsOf everything "steps.fsx" (script [ "let other = pretrain { name \"q\"; model (fromPretrain base'); dataset fashionMnist }" ])
            Expect.equal errs
                [ "steps.fsx", 8, "pretrain.model", "a pretrain step trains a zoo model from scratch; 'p' is not a zoo model" ]
                "what only an operation sees: at its line (8)"
            let errs = errorsOf everything "steps.fsx" (script [])
            Expect.equal (errs |> List.map (fun (_, l, f, _) -> l, f))
                [ 6, "experiments[0].models[0].pretrain.epochs"; 14, "experiments[0].methods[1].epochs" ]
                "the step's epochs line, the variants line"
        }
        test "outside the runner a builder fails at its first invalid value, with the operation's file and line" {
            let line = __LINE__
            let attempt () =
                experiment {
                    name "x"
                    model (zoo "vit" [])
                    dataset fashionMnist
                    methods [ head ]
                    batch 0
                } |> ignore
            match (try attempt (); [] with SpecException errs -> errs) with
            | [ e ] ->
                Expect.equal (Path.GetFileName e.File, e.Line, e.Field) ("LocatedErrorTests.fs", int line + 7, "x.batch") "at the batch operation"
            | other -> failtestf "expected one error, got %A" other
        }
        test "positions never enter equality or hashes: the same experiment from two places is equal, with one hash" {
            let make () = experiment { name "x"; model (zoo "vit" []); dataset fashionMnist; methods [ head ] }
            let a = make ()
            let b =
                experiment {
                    name "x"
                    model (zoo "vit" [])
                    dataset fashionMnist
                    methods [ head ]
                }
            Expect.equal a b "equal records"
            Expect.equal (Spec.runs [ a ] |> List.map Canonical.hash) (Spec.runs [ b ] |> List.map Canonical.hash) "equal hashes"
            Expect.notEqual (SourceMarks.get a) (SourceMarks.get b) "their marks differ"
        }
        test "validate: what the core refuses in a run is at the method's line (YAML and F#), named by run" {
            let yaml =
                errorsOf Lora.Conversion.ToCore.validateSpec "core.yaml"
                    [ "experiments:"                                                  // 1
                      "  - name: e"                                                   // 2
                      "    model: { zoo: vit, options: { img_size: 28, patch_size: 4, in_chans: 1, embed_dim: 32, depth: 1, num_heads: 2 } }" // 3
                      "    dataset: { source: fashion_mnist }"                        // 4
                      "    methods:"                                                  // 5
                      "      - head"                                                  // 6
                      "      - lora: { targets: [nosuch] }"                           // 7
                      "    ranks: [4]" ]
            // one error, at line 7's method entry, named by its run, with the core's words
            let atLine7 (core: string) errs =
                match errs with
                | [ _, line, field, message ] ->
                    Expect.equal (line, field) (7, "experiments[0].methods[1]") "at the method's line"
                    Expect.stringContains message "e/lora-r4: " "names the run"
                    Expect.stringContains message core "the core's message"
                | other -> failtestf "expected one error, got %A" other
            atLine7 "matches no module" yaml
            let fsx =
                errorsOf Lora.Conversion.ToCore.validateSpec "core.fsx"
                    [ "let experiments ="                                             // 1
                      "    [ experiment {"                                            // 2
                      "          name \"e\""                                          // 3
                      "          model (" + vit + ")"                                 // 4
                      "          dataset fashionMnist"                                // 5
                      "          ranks [ 4 ]"                                         // 6
                      "          methods [ head; Lora { LoraOptions.Defaults with ModulesToSave = [ \"nothing_here\" ] } ]" // 7
                      "      } ]" ]
            atLine7 "nothing_here" fsx
            Expect.isEmpty (errorsOf Lora.Conversion.ToCore.validateSpec "ok.yaml" [ "experiments:"; "  - name: e"; "    model: { zoo: vit, options: { img_size: 28, patch_size: 4, in_chans: 1, embed_dim: 32, depth: 1, num_heads: 2 } }"; "    dataset: { source: fashion_mnist }"; "    methods: [lora]"; "    ranks: [4]" ])
                "a run the core accepts"
        }
    ]
