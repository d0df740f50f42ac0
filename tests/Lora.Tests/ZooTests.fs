module Lora.Tests.ZooTests

open Expecto

let tests = testList "Zoo" [ ]
