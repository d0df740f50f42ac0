namespace Lora.Dsl

module Version =
    let value = "0.1.0"
