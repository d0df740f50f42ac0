namespace Lora.Dsl

open System
open System.IO
open System.Collections.Concurrent

/// The paths of a spec mean the same files wherever the spec is run from: a relative data (or weights) path
/// starts at the spec file's folder and becomes a canonical full path (`../shoes` and the same
/// folder's absolute path are one data set, one hash).
module SpecPaths =
    /// A path of the spec in `specDir` as a full path without `.`/`..` (an absolute path stays where it is).
    let resolve (specDir: string) (p: string) = Path.GetFullPath(Path.Combine(specDir, p))

    let dataset (dir: string) (d: DatasetView) =
        let r = resolve dir
        let source =
            match d.Source with
            | FashionMnist p -> FashionMnist(Option.map r p)
            | Cifar p -> Cifar(r p)
            | ImageFolder p -> ImageFolder(r p)
            | SegmentationPairs p -> SegmentationPairs(r p)
            | Composed c -> Composed { c with Path = Option.map r c.Path }
        { d with Source = source }

    let pretrain (dir: string) (p: Pretrain) = { p with Dataset = dataset dir p.Dataset }

    let model (dir: string) (m: BaseModel) =
        match m with
        | FromPretrain p -> FromPretrain(pretrain dir p)
        | Weights(z, path) -> Weights(z, resolve dir path)
        | Onnx z -> Onnx { z with Name = resolve dir z.Name }
        | m -> m

    /// Every data path of the experiment resolved against the spec's folder.
    let experiment (dir: string) (e: Experiment) =
        { e with Datasets = List.map (dataset dir) e.Datasets; Models = List.map (model dir) e.Models }

/// An ONNX model's identity is its file's content, not where it lies.
module FileFingerprint =
    let private cache = ConcurrentDictionary<string, string>()

    /// SHA-256 of the file's bytes ("absent" when there is none); each file is read once per process.
    let sha256 (path: string) =
        cache.GetOrAdd(Path.GetFullPath path, fun full ->
            if not (File.Exists full) then "absent"
            else
                use fs = File.OpenRead full
                Convert.ToHexString(Security.Cryptography.SHA256.HashData(fs)).ToLowerInvariant())

/// What a folder data set holds, for the run's hash: SHA-256 over every file under the folder
/// (relative path, size and bytes, in ordinal order of the paths; names starting with '.' are not
/// data), so adding, removing or changing an image gives new runs. Modification times are not part
/// of it (a copy of the same files is the same data); each folder is read once per process.
module DataFingerprint =
    let private cache = ConcurrentDictionary<string, string>()

    let private compute (root: string) =
        if not (Directory.Exists root) then (if File.Exists root then "file" else "absent")
        else
            let files =
                Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
                |> Seq.map (fun f -> Path.GetRelativePath(root, f).Replace('\\', '/'))
                |> Seq.filter (fun rel -> not (rel.Split('/') |> Array.exists (fun part -> part.StartsWith ".")))
                |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))
                |> Array.ofSeq
            use sha = Security.Cryptography.IncrementalHash.CreateHash(Security.Cryptography.HashAlgorithmName.SHA256)
            let buffer = Array.zeroCreate<byte> (1 <<< 16)
            for rel in files do
                let path = Path.Combine(root, rel)
                use fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read)
                sha.AppendData(Text.Encoding.UTF8.GetBytes(sprintf "%s\n%d\n" rel fs.Length))
                let mutable n = fs.Read(buffer, 0, buffer.Length)
                while n > 0 do
                    sha.AppendData(buffer, 0, n)
                    n <- fs.Read(buffer, 0, buffer.Length)
            sprintf "%d files, sha256 %s" files.Length (Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant().Substring(0, 16))

    /// The fingerprint of the folder at `path` ("absent" when there is none).
    let ofFolder (path: string) = cache.GetOrAdd(Path.GetFullPath path, compute)
