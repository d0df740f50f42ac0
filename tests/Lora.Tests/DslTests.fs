module Lora.Tests.DslTests

open Expecto

let tests = testList "Dsl" [ ]
