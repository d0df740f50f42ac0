module Lora.Tests.SafetensorsTests

open System
open System.IO
open System.Text
open Expecto
open FsCheck
open TorchSharp
open Lora.Core.IO
open Lora.Tests.Generators

let private dtypes =
    [| torch.float32; torch.float64; torch.float16; torch.bfloat16; torch.int64; torch.int32; torch.uint8; torch.bool |]

let private randomTensor (dtype: torch.ScalarType) (shape: int64[]) (seed: int) =
    use g = new torch.Generator(uint64 seed)
    let x = torch.randn(shape, generator = g) * 50.0
    if dtype = torch.bool then x.gt(torch.tensor 0.0) else x.``to``(dtype)

/// A file with a hand-written header followed by `data` bytes.
let private writeRaw (path: string) (header: string) (data: byte[]) =
    let h = Encoding.UTF8.GetBytes header
    use fs = File.Create path
    fs.Write(BitConverter.GetBytes(uint64 h.Length), 0, 8)
    fs.Write(h, 0, h.Length)
    fs.Write(data, 0, data.Length)

let private rejectsWith (path: string) (fragment: string) =
    try
        Safetensors.Load path |> ignore
        failtestf "expected %s to be rejected" path
    with :? InvalidDataException as e ->
        Expect.stringContains e.Message fragment "the error says what is wrong"
        Expect.stringContains e.Message path "the error names the file"

let tests =
    testList "Safetensors" [
        testProp "save → load is the identity for every dtype and shape" (fun (seed: int) (dims: byte list) ->
            let shape = dims |> List.truncate 4 |> List.map (fun d -> int64 (d % 5uy)) |> Array.ofList
            use dir = new TempDir()
            let path = dir.File "t.safetensors"
            let tensors = dtypes |> Array.mapi (fun i dt -> sprintf "t%d" i, randomTensor dt shape (seed + i))
            Safetensors.Save(path, tensors |> Seq.map (fun (k, v) -> Collections.Generic.KeyValuePair(k, v)), dict [ "format", "pt" ] |> Collections.Generic.Dictionary |> fun d -> d :> Collections.Generic.IReadOnlyDictionary<_, _>)
            let struct (back, meta) = Safetensors.LoadWithMetadata path
            Expect.equal meta.["format"] "pt" "metadata survives"
            for (k, v) in tensors do
                let b = back.[k]
                Expect.equal b.dtype v.dtype (sprintf "%s dtype" k)
                Expect.sequenceEqual b.shape v.shape (sprintf "%s shape" k)
                Expect.isTrue (b.eq(v).all().item<bool>()) (sprintf "%s values (seed %d)" k seed))

        test "reads the timm fixture with its real keys and shapes" {
            let t = Safetensors.Load(fixture "vit_tiny_p4_32.safetensors")
            Expect.sequenceEqual t.["blocks.0.attn.qkv.weight"].shape [| 192L; 64L |] "qkv weight"
            Expect.sequenceEqual t.["pos_embed"].shape [| 1L; 65L; 64L |] "pos_embed"
            Expect.equal t.["cls_token"].dtype torch.float32 "float32"
        }

        test "header only: reports entries without reading data" {
            let h = Safetensors.ReadHeader(fixture "vit_tiny_p4_32.io.safetensors")
            Expect.containsAll (h.Entries |> Seq.map (fun e -> e.Name)) [ "input"; "logits" ] "entries"
        }

        test "rejects an empty file" {
            use dir = new TempDir()
            let p = dir.File "empty.safetensors"
            File.WriteAllBytes(p, [||])
            rejectsWith p "fewer than the 8-byte header length"
        }

        test "rejects a truncated file" {
            use dir = new TempDir()
            let p = dir.File "trunc.safetensors"
            let bytes = File.ReadAllBytes(fixture "vit_tiny_p4_32.io.safetensors")
            File.WriteAllBytes(p, bytes.[.. bytes.Length - 5])
            rejectsWith p "data"
        }

        test "a header claiming a terabyte tensor is an error before any allocation" {
            use dir = new TempDir()
            let p = dir.File "huge.safetensors"
            writeRaw p """{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}""" [| 0uy; 0uy; 0uy; 0uy |]
            rejectsWith p "ends at byte 4000000000000"
        }

        test "a header length beyond the file is rejected" {
            use dir = new TempDir()
            let p = dir.File "len.safetensors"
            File.WriteAllBytes(p, Array.append (BitConverter.GetBytes(UInt64.MaxValue)) [| 1uy |])
            rejectsWith p "header claims"
        }

        test "overlapping tensors are rejected" {
            use dir = new TempDir()
            let p = dir.File "overlap.safetensors"
            writeRaw p """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""" (Array.zeroCreate 12)
            rejectsWith p "overlaps"
        }

        test "a size that disagrees with the shape is rejected" {
            use dir = new TempDir()
            let p = dir.File "lie.safetensors"
            writeRaw p """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""" (Array.zeroCreate 8)
            rejectsWith p "= 12 bytes but its data_offsets span 8"
        }

        test "unknown dtype, bad JSON and a negative dimension are rejected" {
            use dir = new TempDir()
            let p = dir.File "bad.safetensors"
            writeRaw p """{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}""" [| 0uy |]
            rejectsWith p "dtype Q4"
            writeRaw p """{"a":""" [||]
            rejectsWith p "not JSON"
            writeRaw p """{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}""" [| 0uy |]
            rejectsWith p "non-negative"
        }

        test "a failed save leaves the previous file intact and no temporary file" {
            use dir = new TempDir()
            let p = dir.File "keep.safetensors"
            Safetensors.Save(p, [ Collections.Generic.KeyValuePair("a", torch.ones(2L)) ])
            let before = File.ReadAllBytes p
            Expect.throwsT<ArgumentException> (fun () ->
                Safetensors.Save(p, [ Collections.Generic.KeyValuePair("a", torch.ones(2L)); Collections.Generic.KeyValuePair("a", torch.ones(2L)) ])) "repeated name"
            Expect.equal (File.ReadAllBytes p) before "old file intact"
            Expect.equal (Directory.GetFiles dir.Path).Length 1 "no temporary file"
        }
    ]

