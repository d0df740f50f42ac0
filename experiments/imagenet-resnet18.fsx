// The main job's second experiment: adapt ML.NET's ImageNet ResNet-18 (real pretrained weights,
// from NuGet: zoo name resnet18_mlnet) to all ten Fashion-MNIST classes. Same records (and run
// hashes) as imagenet-resnet18.yaml.
//   lora plan experiments/imagenet-resnet18.fsx
// For editors (completion, type checks): the built Lora.Dsl. `lora run` defines LORA_RUNNER and
// references Lora.Dsl itself. (From the package instead: #r "nuget: Lora.Dsl".)
#if !LORA_RUNNER
#r "../src/Lora.Dsl/bin/Release/net10.0/Lora.Dsl.dll"
open Lora.Dsl
#endif

// LoRA and DoRA on the 3×3 convolutions of the residual blocks (the new fc head trains too).
// Each method has its own learning rate, as papers tune them: full fine-tuning 1e-3, the linear
// probe 3e-3, LoRA and DoRA 3e-3 after a one-epoch warm-up (why: see imagenet-resnet18.yaml).
let convs3x3 = { LoraOptions.Defaults with Targets = [ @"re:layer\d\.\d\.conv[12]" ] }

let experiments =
    [ experiment {
          name "imagenet-resnet18"
          model (zoo "resnet18_mlnet" [])
          dataset (fashionMnist |> limit 1000 500)
          imageSize 32
          methods [ full ]
          variants
              [ yield variant head |> withLr 3e-3
                for m in [ Lora convs3x3; Dora convs3x3 ] do
                    yield variant m |> withSettings [ Setting.Lr 3e-3; Setting.Warmup 16 ] ]
          ranks [ 4; 8 ]
          epochs 3
          batch 64
          lr 1e-3
      } ]
