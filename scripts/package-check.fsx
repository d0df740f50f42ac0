// An F# script as a user writes it against the Lora.Dsl package (scripts/package-check.sh runs it
// with `dotnet fsi` next to a nuget.config naming the local feed): it declares the README's main job
// and prints its runs with their content hashes, the ones `lora plan experiments/quickstart.yaml` gives.
#r "nuget: Lora.Dsl"

open Lora.Dsl

let vitFmnist =
    pretrain {
        name "vit-fmnist-0-4"
        model (zoo "vit" [ "img_size", Int 28; "patch_size", Int 4; "in_chans", Int 1; "embed_dim", Int 64
                           "depth", Int 4; "num_heads", Int 4; "num_classes", Int 5 ])
        dataset (fashionMnist |> classes [ 0 .. 4 ] |> limit 12000 1000)
        epochs 3
        batch 128
        lr 2e-3
        warmup 20
    }

let experiments =
    [ experiment {
          name "quickstart"
          model (fromPretrain vitFmnist)
          dataset (fashionMnist |> classes [ 5 .. 9 ] |> limit 2000 1000)
          methods [ full; head; lora; dora
                    AdaLora(LoraOptions.Defaults, { AdaLoraOptions.Defaults with TInit = 10; TFinal = 20; DeltaT = 2 })
                    adapter ]
          ranks [ 4; 8 ]
          seeds [ 0; 1; 2 ]
          epochs 3
          batch 64
          lr 3e-3
      } ]

let runs = experiments |> List.collect Grid.expand
printfn "experiments: %d, runs: %d" experiments.Length runs.Length
for r in runs do printfn "%s/%s %s" r.Experiment r.Name (Canonical.hash r)
