module Lora.Tests.DataTests

open Expecto

let tests = testList "Data" [ ]
