module Lora.Tests.TrainingTests

open Expecto

let tests = testList "Training" [ ]
