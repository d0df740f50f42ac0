/// Shared FsCheck configuration: every property prints its replay seed on failure (Expecto does so
/// for FsCheckConfig), and generators live here rather than in a global Arb.Register.
module Lora.Tests.Generators

open Expecto

let config = { FsCheckConfig.defaultConfig with maxTest = 40 }

let testProp name = testPropertyWithConfig config name
