module Lora.Tests.TuningTests

open Expecto

let tests = testList "Tuning" [ ]
