// Quickstart: pretrain a small ViT on Fashion-MNIST classes 0-4, then tune it on classes 5-9 with
// every method. Same records (and run hashes) as quickstart.yaml.
//   lora plan experiments/quickstart.fsx
// For editors (completion, type checks): the built Lora.Dsl. `lora run` defines LORA_RUNNER and
// references Lora.Dsl itself. (From the package instead: #r "nuget: Lora.Dsl".)
#if !LORA_RUNNER
#r "../src/Lora.Dsl/bin/Release/net10.0/Lora.Dsl.dll"
open Lora.Dsl
#endif

let vitFmnist =
    pretrain {
        name "vit-fmnist-0-4"
        model (
            zoo "vit" [
                "img_size", Int 28
                "patch_size", Int 4
                "in_chans", Int 1
                "embed_dim", Int 64
                "depth", Int 4
                "num_heads", Int 4
                "num_classes", Int 5 ]
        )
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
          // three seeds of every tune: the tables show mean ± std (the pretraining keeps its one seed)
          seeds [ 0; 1; 2 ]
          epochs 3
          batch 64
          lr 3e-3
      } ]
