// The seeds' tables, re-created with the zoo's models on the data at hand, sized for one GPU:
//   1. Medical-SAM-Adapter: SAM-style segmenters with ViT and TinyViT encoders × Adapter / LoRA / AdaLoRA
//      on Fashion-MNIST objects composed on a 256-px canvas (DICE, mIoU, peak memory);
//   2. ModelScope: classification accuracy per data set view × backbone (ViT-S/16, ConvNeXt-T);
//   3. tfimm: the parameter summary of every model × method (written by `lora tables` from the runs).
//   lora run experiments/seed-tables.fsx --device cuda --write-tables paper-tables
// experiments/seed-segmentation-cpu.yaml is table 1 at a size a CPU finishes in minutes.
// For editors (completion, type checks): the built Lora.Dsl. `lora run` defines LORA_RUNNER and
// references Lora.Dsl itself. (From the package instead: #r "nuget: Lora.Dsl".)
#if !LORA_RUNNER
#r "../src/Lora.Dsl/bin/Release/net10.0/Lora.Dsl.dll"
open Lora.Dsl
#endif

let segmentationData objectClasses = composedSegmentation 256 3 |> classes objectClasses |> limit 8000 1000
let imageEncoderLinears = [ "re:image_encoder\\.(blocks|layers)\\..*\\.(qkv|proj|lin1|lin2|fc1|fc2)" ]

let samPretrain stepName zooName options =
    pretrain {
        name stepName
        task Segmentation
        model (zoo zooName options)
        dataset (segmentationData [ 0 .. 4 ])
        epochs 10
        batch 32
        lr 5e-4
        warmup 100
        device Cuda
        precision Bf16
    }

let samVit =
    samPretrain "sam-vit-s" "sam_vit" [
        "img_size", Int 256; "in_chans", Int 1; "patch_size", Int 16; "embed_dim", Int 384
        "depth", Int 12; "num_heads", Int 6; "window_size", Int 8 ]

let mobileSam = samPretrain "mobile-sam" "mobile_sam" [ "img_size", Int 256; "in_chans", Int 1 ]

let classifierPretrain stepName zooName =
    pretrain {
        name stepName
        model (zoo zooName [ "img_size", Int 224; "num_classes", Int 5 ])
        dataset (fashionMnist |> classes [ 0 .. 4 ])
        epochs 5
        batch 128
        lr 1e-3
        warmup 200
        imageSize 224
        device Cuda
        precision Bf16
    }

let experiments =
    [ experiment {
          name "seed-segmentation"
          task Segmentation
          models [ fromPretrain samVit; fromPretrain mobileSam ]
          dataset (segmentationData [ 5 .. 9 ])
          methods [ adapter
                    Lora { LoraOptions.Defaults with Targets = imageEncoderLinears }
                    AdaLora({ LoraOptions.Defaults with Targets = imageEncoderLinears }, { AdaLoraOptions.Defaults with TInit = 100; TFinal = 200; DeltaT = 10 }) ]
          ranks [ 4 ]
          epochs 5
          batch 32
          lr 1e-3
          device Cuda
          precision Bf16
          // Medical-SAM-Adapter: Baseline | Backbone | mode | DICE | mIoU | Memory, and LoRA's gain over the Adapter
          tables [ table "medical-sam-adapter" [
                       Table.rows [ "model"; "backbone"; "mode" ]; Table.headers [ "model", "Baseline"; "backbone", "Backbone" ]
                       Table.cellsOf [ { TableCell.Of "dice" with Header = Some "DICE" }; { TableCell.Of "miou" with Header = Some "mIoU" }
                                       { TableCell.Of "memory" with Header = Some "Memory" } ]
                       Table.orderBy [ "model"; "mode" ]; Table.baseline "adapter" ] ]
      }
      experiment {
          name "seed-classification"
          models [ fromPretrain (classifierPretrain "vit-s-fmnist-0-4" "vit_small_patch16_224")
                   fromPretrain (classifierPretrain "convnext-t-fmnist-0-4" "convnext_tiny") ]
          datasets [ fashionMnist |> classes [ 5 .. 9 ]
                     fashionMnist |> classes [ 5 .. 9 ] |> shots 10 ]
          methods [ full; head
                    Lora { LoraOptions.Defaults with Targets = [ "fc1"; "fc2" ] } ]
          ranks [ 8 ]
          epochs 5
          batch 128
          lr 1e-3
          imageSize 224
          device Cuda
          precision Bf16
          tables [
              // ModelScope: accuracy per data set view (rows) × backbone (columns), one table per mode
              for m in [ "full"; "head"; "lora" ] ->
                  table ("modelscope-" + m) [
                      Table.caption $"Accuracy of {m} per data set and backbone (mean ± std over seeds)"
                      Table.rows [ "dataset" ]; Table.columns [ "model" ]; Table.cells [ "accuracy" ]; Table.filter "method" [ m ] ]
              // tfimm: the parameter summary of every model × method
              table "tfimm-parameters" [
                  Table.rows [ "model"; "method"; "rank" ]
                  Table.cellsOf [ TableCell.Of "total"; TableCell.Of "trainable"; { TableCell.Of "frozen" with Header = Some "non-trainable" } ]
                  Table.orderBy [ "model"; "method"; "rank" ] ] ]
      } ]
