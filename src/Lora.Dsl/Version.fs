namespace Lora.Dsl

open System.Reflection

type internal VersionMarker = class end

module Version =
    /// The packages' version (Version in Directory.Build.props), as this assembly records it.
    let value =
        let asm = typeof<VersionMarker>.Assembly
        match asm.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
        | null -> string (asm.GetName().Version)
        | a -> a.InformationalVersion
