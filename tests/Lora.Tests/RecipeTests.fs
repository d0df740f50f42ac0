/// The training recipe in Lora.Core: schedules, gradient accumulation, label smoothing, early
/// stopping with best-epoch selection, random resized crops.
module Lora.Tests.RecipeTests

open System
open Expecto
open TorchSharp
open Lora.Core.Data
open Lora.Core.Training
open Lora.Tests.Generators
open Lora.Tests.TrainingTests

/// A linear classifier in float64 with no dropout: accumulation can be compared exactly.
type Linear64() as this =
    inherit torch.nn.Module<Tensor, Tensor>("lin64")
    let fc = torch.nn.Linear(64L, 10L, dtype = torch.float64)
    do this.RegisterComponents()
    override _.forward(x) = fc.forward(x.flatten(1L).``to``(torch.float64))

let private train (options: TrainOptions) (data: ImageDataset) (validation: ImageDataset option) =
    torch.manual_seed 3L |> ignore
    let model = new Linear64()
    let result = Trainer(model, options).Fit(data, Option.toObj validation)
    model, result

let tests =
    testSequenced <| testList "recipe" [
        test "schedules: linear to min_lr, constant, step decay every decay_epochs" {
            let at (o: TrainOptions) s = Trainer.LearningRateAt(o, s, 20L)
            let linear = TrainOptions(LearningRate = 1.0, MinLearningRate = 0.1, WarmupSteps = 2, Epochs = 4, Schedule = LrSchedule.Linear)
            Expect.floatClose Expecto.Accuracy.veryHigh (at linear 0L) 0.5 "warm-up"
            Expect.floatClose Expecto.Accuracy.veryHigh (at linear 2L) 1.0 "peak after warm-up"
            Expect.floatClose Expecto.Accuracy.veryHigh (at linear 11L) 0.55 "half way"
            Expect.floatClose Expecto.Accuracy.veryHigh (at linear 20L) 0.1 "min_lr at the end"
            let constant = TrainOptions(LearningRate = 1.0, WarmupSteps = 2, Epochs = 4, Schedule = LrSchedule.Constant)
            Expect.isTrue ([ 2L .. 19L ] |> List.forall (fun s -> at constant s = 1.0)) "constant"
            // 5 steps per epoch, decay every 2 epochs (10 steps) by 0.5
            let step = TrainOptions(LearningRate = 1.0, Epochs = 4, Schedule = LrSchedule.Step, DecayEpochs = 2, DecayRate = 0.5)
            Expect.equal [ for s in [ 0L; 9L; 10L; 19L ] -> at step s ] [ 1.0; 1.0; 0.5; 0.5 ] "step"
            let cosine = TrainOptions(LearningRate = 1.0, MinLearningRate = 0.1, WarmupSteps = 4)
            Expect.floatClose Expecto.Accuracy.veryHigh (Trainer.LearningRateAt(cosine, 12L, 20L)) 0.55 "cosine stays the default"
        }
        test "gradient accumulation equals the bigger batch (float64, uneven last group)" {
            for n in [ 24; 22 ] do
                let data = synthetic n 5
                let o batch accum = TrainOptions(Epochs = 2, LearningRate = 0.05, WeightDecay = 0.01, Seed = 1, Prefetch = 0, BatchSize = batch, GradAccumulation = accum)
                let big, rb = train (o 8 1) data None
                let small, rs = train (o 4 2) data None
                Expect.equal rs.Steps rb.Steps (sprintf "%d items: same optimiser steps" n)
                for (name, a), (_, b) in List.zip (parametersOf big) (parametersOf small) do
                    let diff = (a - b).abs().max().item<float>()
                    Expect.isLessThan diff 1e-12 (sprintf "%d items: %s equal (max diff %g)" n name diff)
                for a, b in List.zip (List.ofSeq rb.LossCurve) (List.ofSeq rs.LossCurve) do
                    Expect.floatClose Expecto.Accuracy.medium b.Loss a.Loss "the step's loss is the group's (read as float32)"
        }
        test "label smoothing: (1 − ε) NLL + ε mean(−log p), as the formula gives" {
            let logits = array2D [ [ 1.0; 2.0; 0.5 ]; [ -1.0; 0.0; 3.0 ] ]
            let targets = [| 1L; 0L |]
            let eps = 0.2
            let expected =
                [ for i in 0 .. 1 ->
                      let row = [ for k in 0 .. 2 -> logits[i, k] ]
                      let lse = log (row |> List.sumBy exp)
                      let logp = row |> List.map (fun z -> z - lse)
                      (1.0 - eps) * -logp[int targets[i]] + eps * -(List.average logp) ]
                |> List.average
            use l = torch.tensor(logits, dtype = torch.float64)
            use t = torch.tensor(targets)
            use loss = Losses.CrossEntropy(l, t, eps)
            Expect.floatClose Expecto.Accuracy.veryHigh (loss.item<float>()) expected "smoothed"
            use plain = Losses.CrossEntropy(l, t, 0.0)
            use reference = torch.nn.functional.cross_entropy(l, t)
            Expect.equal (plain.item<float>()) (reference.item<float>()) "ε = 0 is cross_entropy"
        }
        test "early stopping stops after patience epochs without a better metric; the best epoch is reported" {
            let data = synthetic 40 1
            // a learning rate too small to change any prediction: epoch 1 stays the best
            let o = TrainOptions(Epochs = 8, BatchSize = 10, LearningRate = 1e-12, Patience = Nullable 2, SelectBest = true, Prefetch = 0)
            let _, r = train o data (Some(synthetic 20 2))
            Expect.equal r.Epochs.Count 3 "epoch 1, then two without improvement"
            Expect.isTrue r.StoppedEarly "stopped early"
            Expect.equal r.SelectedEpoch (Nullable 1) "epoch 1 selected"
            Expect.equal r.Final r.Epochs[0].Validation "the selected epoch's metrics"
        }
        test "best-epoch selection leaves the best epoch's weights in the model" {
            let data = synthetic 60 3
            let validation = synthetic 30 4
            let o = TrainOptions(Epochs = 6, BatchSize = 10, LearningRate = 0.5, SelectBest = true, Prefetch = 0)
            let model, r = train o data (Some validation)
            let again = Evaluator.Classification(model, validation, 64)
            Expect.equal again.Top1 r.Final.Top1 "the model is the one whose metrics are reported"
            let best = r.Epochs |> Seq.maxBy (fun e -> e.Validation.Top1.Value)
            Expect.equal r.SelectedEpoch (Nullable best.Epoch) "the first epoch with the best accuracy"
        }
        test "random resized crop: boxes inside the image with timm's area and ratio bounds; output keeps its size" {
            let rng = Random 7
            for _ in 1 .. 200 do
                let top, left, h, w = Transforms.RandomResizedBox(32, 32, 0.08, rng).ToTuple()
                Expect.isTrue (top >= 0 && left >= 0 && top + h <= 32 && left + w <= 32) "inside"
                if (h, w) <> (32, 32) then
                    Expect.isTrue (float (h * w) >= 0.08 * 1024.0 * 0.8) "area at least the scale (rounding aside)"
                    Expect.isTrue (float w / float h >= 0.75 * 0.8 && float w / float h <= 4.0 / 3.0 * 1.25) "ratio"
            use x = torch.rand(4L, 3L, 16L, 16L)
            use y = Transforms.RandomResizedCrop(x, 0.3, Random 1)
            Expect.equal y.shape [| 4L; 3L; 16L; 16L |] "same shape"
            let t = Transforms(RandomResizedCropScale = 0.3)
            Expect.isTrue t.IsRandom "random"
            Expect.equal (t.ForEvaluation().RandomResizedCropScale) 0.0 "off for evaluation"
        }
    ]
