module Lora.Tests.SafetensorsTests

open Expecto

let tests = testList "Safetensors" [ ]
