namespace Lora.Dsl

/// The words a table declaration may use: the metrics a cell can show and the axes rows and
/// columns can run over. `lora tables` (Lora.Runner's Tables) reads records by the same names.
module TableVocabulary =
    /// Which way is better, for marking the best value of a column.
    type Better =
        | Higher
        | Lower
        | Neither

    /// metric → (default format, better). Run-record metrics first, then the record's other numbers.
    let metrics =
        [ "accuracy", ("percent", Higher)
          "top5", ("percent", Higher)
          "dice", ("fraction", Higher)
          "miou", ("fraction", Higher)
          "loss", ("fraction", Lower)
          "trainable", ("count", Neither)
          "total", ("count", Neither)
          "frozen", ("count", Neither)
          "trainable_percent", ("percent", Neither)
          "train_seconds", ("seconds", Lower)
          "memory", ("memory", Lower) ]

    let metricNames = metrics |> List.map fst

    /// Formats a cell may name; any .NET numeric format ("F3", "N0") is accepted too.
    let formats = [ "percent"; "fraction"; "count"; "seconds"; "memory" ]

    /// Axes of a row or a column: run labels, a method with its rank ("LoRA r4"), the run name without
    /// its seed ("variant"), and config.<path> for any field of the run's canonical configuration
    /// (config.training.lr, config.method.alpha).
    let axes = [ "method"; "mode"; "rank"; "model"; "zoo"; "backbone"; "dataset"; "task"; "variant"; "name"; "seed" ]

    let isAxis (a: string) = List.contains a axes || (a.StartsWith "config." && a.Length > "config.".Length)

    let aggregates = [ "mean", Mean; "mean_std", MeanStd; "max", Max ]

    /// A .NET standard numeric format: one letter (F, N, E, P, G) and up to two digits.
    let isNumericFormat (f: string) =
        f.Length >= 1 && f.Length <= 3 && "FNEPGfnepg".Contains f.[0] && Seq.forall System.Char.IsDigit (f.Substring 1)
