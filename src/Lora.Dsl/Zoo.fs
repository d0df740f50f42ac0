namespace Lora.Dsl

/// The zoo's model names, as the Dsl knows them (it does not reference Lora.Core): checked at
/// validation time so a typo fails before anything trains.
module ZooNames =
    /// Named configurations (timm names).
    let named =
        [ "vit_tiny_patch16_224"; "vit_small_patch16_224"; "vit_base_patch16_224"; "vit_large_patch16_224"
          "resnet18"; "resnet34"; "resnet50"
          "convnext_tiny"; "convnext_small"; "convnext_base"; "tiny_vit_5m_224"; "tiny_vit_11m_224"; "tiny_vit_21m_224"
          "sam_vit_b"; "sam_vit_l"; "sam_vit_h"; "sam_vit_s"; "mobile_sam"
          "resnet18_mlnet" ]

    /// Families configured entirely by options (img_size, patch_size, embed_dim, depth, ...).
    /// (A test checks that named @ families is exactly Lora.Core's Zoo.Names.)
    let families = [ "vit"; "convnext"; "resnet"; "tiny_vit"; "unet"; "sam_vit"; "sam_tiny_vit" ]

    let all = named @ families

    let isKnown (name: string) = List.contains name all

    /// Levenshtein distance (small strings only).
    let distance (a: string) (b: string) =
        let d = Array2D.init (a.Length + 1) (b.Length + 1) (fun i j -> if i = 0 then j elif j = 0 then i else 0)
        for i in 1 .. a.Length do
            for j in 1 .. b.Length do
                let cost = if a.[i - 1] = b.[j - 1] then 0 else 1
                d.[i, j] <- min (min (d.[i - 1, j] + 1) (d.[i, j - 1] + 1)) (d.[i - 1, j - 1] + cost)
        d.[a.Length, b.Length]

    /// Close matches from `candidates`, best first: small edit distance, or a shared prefix/substring.
    let suggest (candidates: string list) (name: string) =
        let n = name.ToLowerInvariant()
        let scored = candidates |> List.map (fun c -> c, distance n c)
        let close = scored |> List.filter (fun (_, d) -> d <= max 2 (n.Length / 3))
        match close with
        | [] ->
            // no near spelling: fall back to names that contain it (or that it contains)
            scored
            |> List.filter (fun (c, _) -> n.Length >= 3 && (c.Contains n || n.Contains c))
            |> List.sortBy (fun (c, d) -> d, c)
            |> List.truncate 3
            |> List.map fst
        | _ ->
            let best = close |> List.map snd |> List.min
            close |> List.filter (fun (_, d) -> d = best) |> List.map fst |> List.sort |> List.truncate 3

    /// " (did you mean a, b?)" or "".
    let didYouMean candidates name =
        match suggest candidates name with
        | [] -> ""
        | xs -> sprintf " (did you mean %s?)" (String.concat ", " xs)
