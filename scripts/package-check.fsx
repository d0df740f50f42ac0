// The tail of the F# script scripts/package-check.sh writes as a user would against the Lora.Dsl
// package: `#r "nuget: Lora.Dsl"`, then experiments/quickstart.fsx itself (its editor preamble
// left out), then these lines, which print the main job's runs with their content hashes (the ones
// `lora plan experiments/quickstart.yaml` gives).
let runs = experiments |> List.collect Grid.expand
printfn "experiments: %d, runs: %d" experiments.Length runs.Length
for r in runs do printfn "%s/%s %s" r.Experiment r.Name (Canonical.hash r)
