// Quickstart: pretrain a small ViT on Fashion-MNIST classes 0-4, then tune it on classes 5-9 with
// every method. Same records (and run hashes) as quickstart.yaml.
//   lora plan experiments/quickstart.fsx
// The runner evaluates this script with Lora.Dsl referenced and opened.

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
        dataset (fashionMnist |> classes [ 0 .. 4 ] |> limit 3000 500)
        epochs 2
        batch 64
        lr 1e-3
    }

let experiments =
    [ experiment {
          name "quickstart"
          model (fromPretrain vitFmnist)
          dataset (fashionMnist |> classes [ 5 .. 9 ] |> limit 1000 500)
          methods [ full; head; lora; dora
                    AdaLora(LoraOptions.Defaults, { AdaLoraOptions.Defaults with TInit = 5; TFinal = 5; DeltaT = 2 })
                    adapter ]
          ranks [ 4; 8 ]
          epochs 2
          batch 64
          lr 1e-3
      } ]
