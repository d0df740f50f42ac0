module Lora.Tests.RunnerTests

open Expecto

let tests = testList "Runner" [ ]
