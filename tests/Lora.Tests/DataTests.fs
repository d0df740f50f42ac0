module Lora.Tests.DataTests

open System
open System.IO
open Expecto
open TorchSharp
open Lora.Core.Data
open Lora.Tests.Generators

let fashionInstalled = FashionMnist.IsInstalled()

/// A set where image i encodes i in its first two pixels (to follow items through views and loaders).
let indexed (n: int) (classes: int) =
    let h, w = 4, 4
    let px = Array.zeroCreate<byte> (n * h * w)
    for i in 0 .. n - 1 do
        px[i * h * w] <- byte (i % 256)
        px[i * h * w + 1] <- byte (i / 256)
        px[i * h * w + 2] <- byte (i % classes * 20)
    ImageDataset(px, Array.init n (fun i -> i % classes), 1, h, w, [| for c in 0 .. classes - 1 -> $"c{c}" |])

let itemId (d: ImageDataset) (i: int) = int (d.Image(i).[0]) + 256 * int (d.Image(i).[1])

/// Exact tensor equality (same shape, same values).
let same (a: torch.Tensor) (b: torch.Tensor) = a.shape = b.shape && a.eq(b).all().item<bool>()

let throwsWith (msgParts: string list) (f: unit -> 'a) =
    let e = Expect.throwsC (fun () -> f () |> ignore) id
    for part in msgParts do
        Expect.stringContains e.Message part $"the error message names '{part}'"
    e

let idxRoundTrips =
    [ for name in [ "a.idx"; "a.idx.gz" ] ->
        test $"write/read round trip ({name})" {
            use d = new TempDir()
            let data = Array.init (3 * 5 * 7) byte
            IdxReader.Write(d.File name, [| 3; 5; 7 |], data)
            let a = IdxReader.Read(d.File name)
            Expect.equal a.Dims [| 3; 5; 7 |] "dims"
            Expect.equal a.Data data "data"
        } ]

let idx =
    testList "IDX" <| idxRoundTrips @ [
        test "truncated raw file names the file and what is missing" {
            use d = new TempDir()
            IdxReader.Write(d.File "t.idx", [| 4; 28; 28 |], Array.zeroCreate (4 * 28 * 28))
            let bytes = File.ReadAllBytes(d.File "t.idx")
            File.WriteAllBytes(d.File "t.idx", bytes[.. bytes.Length - 11])
            throwsWith [ "t.idx"; "truncated"; "4x28x28" ] (fun () -> IdxReader.Read(d.File "t.idx")) |> ignore
        }
        test "bad magic, bad type and a huge dimension are refused before allocating" {
            use d = new TempDir()
            File.WriteAllBytes(d.File "m.idx", [| 1uy; 2uy; 8uy; 1uy; 0uy; 0uy; 0uy; 1uy; 0uy |])
            throwsWith [ "m.idx"; "not an IDX file" ] (fun () -> IdxReader.Read(d.File "m.idx")) |> ignore
            File.WriteAllBytes(d.File "f.idx", [| 0uy; 0uy; 0x0Duy; 1uy; 0uy; 0uy; 0uy; 1uy; 0uy; 0uy; 0uy; 0uy |])
            throwsWith [ "f.idx"; "0x0d" ] (fun () -> IdxReader.Read(d.File "f.idx")) |> ignore
            File.WriteAllBytes(d.File "h.idx", [| 0uy; 0uy; 8uy; 3uy; 0x7Fuy; 0xFFuy; 0xFFuy; 0xFFuy; 0x7Fuy; 0xFFuy; 0xFFuy; 0xFFuy; 0uy; 0uy; 0uy; 9uy |])
            throwsWith [ "h.idx"; "too large" ] (fun () -> IdxReader.Read(d.File "h.idx")) |> ignore
        }
        test "corrupt gzip gives a clear error" {
            use d = new TempDir()
            IdxReader.Write(d.File "c.idx.gz", [| 100 |], Array.init 100 byte)
            let bytes = File.ReadAllBytes(d.File "c.idx.gz")
            File.WriteAllBytes(d.File "c.idx.gz", bytes[.. bytes.Length / 2])
            throwsWith [ "c.idx.gz" ] (fun () -> IdxReader.Read(d.File "c.idx.gz")) |> ignore
        }
        test "a missing Fashion-MNIST folder tells how to install it" {
            use d = new TempDir()
            throwsWith [ "apt-get install dataset-fashion-mnist" ] (fun () -> FashionMnist.Load(d.File "nowhere")) |> ignore
            throwsWith [ "apt-get install dataset-fashion-mnist"; "t10k-images" ] (fun () -> FashionMnist.Load(d.Path, false)) |> ignore
        }
        test "a folder of our own IDX files loads as Fashion-MNIST" {
            use d = new TempDir()
            IdxReader.Write(d.File "t10k-images-idx3-ubyte.gz", [| 3; 28; 28 |], Array.init (3 * 784) byte)
            IdxReader.Write(d.File "t10k-labels-idx1-ubyte", [| 3 |], [| 9uy; 0uy; 4uy |])
            let s = FashionMnist.Load(d.Path, false)
            Expect.equal (s.Count, s.Height, s.Width, s.Channels) (3, 28, 28, 1) "shape"
            Expect.equal s.Labels [| 9; 0; 4 |] "labels"
            IdxReader.Write(d.File "t10k-labels-idx1-ubyte", [| 2 |], [| 9uy; 0uy |])
            throwsWith [ "3 images"; "2 labels" ] (fun () -> FashionMnist.Load(d.Path, false)) |> ignore
        }
        (if fashionInstalled then test else ptest) "installed Fashion-MNIST: 60,000 + 10,000 balanced 28x28 images" {
            let tr = FashionMnist.Load(train = true)
            let te = FashionMnist.Load(train = false)
            Expect.equal (tr.Count, te.Count) (60000, 10000) "counts"
            Expect.equal (te.Height, te.Width, te.Channels) (28, 28, 1) "shape"
            Expect.equal (te.ClassCounts()) (Array.create 10 1000) "1,000 test images per class"
            Expect.equal (tr.ClassCounts()) (Array.create 10 6000) "6,000 training images per class"
            Expect.equal te.Labels[0] 9 "the first test image is an ankle boot"
            let mean = te.Pixels |> Array.averageBy float
            Expect.isTrue (mean > 60.0 && mean < 80.0) $"mean pixel {mean} is Fashion-MNIST's (~73)"
        }
    ]

let cifar =
    testList "CIFAR" [
        let record (labels: byte list) (fill: byte) = [| yield! labels; yield! Array.create 3072 fill |]
        test "CIFAR-10 records: labels and channel-first pixels" {
            use d = new TempDir()
            File.WriteAllBytes(d.File "data_batch_1.bin", Array.concat [ record [ 3uy ] 10uy; record [ 7uy ] 20uy ])
            File.WriteAllBytes(d.File "data_batch_2.bin", record [ 1uy ] 30uy)
            let s = Cifar.LoadCifar10(d.Path, true)
            Expect.equal s.Labels [| 3; 7; 1 |] "labels across batches"
            Expect.equal (s.Channels, s.Height, s.Width) (3, 32, 32) "shape"
            Expect.equal (s.Image(1).ToArray() |> Array.distinct) [| 20uy |] "pixels of record 2"
            Expect.equal s.Classes[3] "cat" "CIFAR-10 class names"
        }
        test "CIFAR-100: fine or coarse label byte" {
            use d = new TempDir()
            File.WriteAllBytes(d.File "train.bin", Array.concat [ record [ 4uy; 55uy ] 1uy; record [ 19uy; 99uy ] 2uy ])
            Expect.equal (Cifar.LoadCifar100(d.Path, true, true).Labels) [| 55; 99 |] "fine"
            Expect.equal (Cifar.LoadCifar100(d.Path, true, false).Labels) [| 4; 19 |] "coarse"
        }
        test "truncated or wrong-format batches are refused with the reason" {
            use d = new TempDir()
            File.WriteAllBytes(d.File "test_batch.bin", (record [ 1uy ] 0uy)[.. 3000])
            throwsWith [ "test_batch.bin"; "3073-byte"; "truncated" ] (fun () -> Cifar.LoadCifar10(d.Path, false)) |> ignore
            File.WriteAllBytes(d.File "test_batch.bin", record [ 200uy ] 0uy)
            throwsWith [ "label 200" ] (fun () -> Cifar.LoadCifar10(d.Path, false)) |> ignore
            throwsWith [ "train.bin" ] (fun () -> Cifar.LoadCifar100(d.Path, true)) |> ignore
        }
    ]

let folders =
    testList "folders" [
        test "PNG ImageFolder round trip: sorted class folders, exact pixels" {
            use d = new TempDir()
            let s = indexed 12 3
            ImageFolder.Write(s, d.Path)
            let back = ImageFolder.Load(d.Path, 4, 1)
            Expect.equal back.Classes [| "000_c0"; "001_c1"; "002_c2" |] "class names are the sorted folder names"
            Expect.equal back.Count 12 "count"
            // files are written per class in index order, so the class-sorted order is a permutation
            let order = [| for c in 0 .. 2 do for i in 0 .. 11 do if i % 3 = c then yield i |]
            Expect.equal back.Pixels (s.Subset(order).Pixels) "pixels survive PNG encode/decode"
            Expect.equal back.Labels (s.Subset(order).Labels) "labels"
            let rgb = ImageFolder.Load(d.Path, 8, 3)
            Expect.equal (rgb.Channels, rgb.Height) (3, 8) "decoded to RGB and resized"
        }
        test "a broken image file and an empty class folder are reported by name" {
            use d = new TempDir()
            Directory.CreateDirectory(d.File "cat") |> ignore
            Directory.CreateDirectory(d.File "dog") |> ignore
            File.WriteAllBytes(Path.Combine(d.File "cat", "x.png"), [| 0x89uy; 0x50uy; 1uy; 2uy |])
            throwsWith [ "dog" ] (fun () -> ImageFolder.Load(d.Path, 8)) |> ignore
            File.WriteAllBytes(Path.Combine(d.File "dog", "y.png"), Png.Encode(ReadOnlySpan(Array.zeroCreate<byte> 4), 1, 2, 2))
            throwsWith [ "x.png"; "cannot decode" ] (fun () -> ImageFolder.Load(d.Path, 8)) |> ignore
        }
        test "segmentation pairs round trip and missing masks are named" {
            use d = new TempDir()
            let src = indexed 40 4
            let fm = ImageDataset(Array.init (40 * 28 * 28) (fun i -> byte ((i * 37) % 256)), Array.init 40 (fun i -> i % 4), 1, 28, 28, [| "a"; "b"; "c"; "d" |])
            let seg = ComposedSegmentation.Create(fm, 5, 3, ComposeOptions(Canvas = 48, MaxScale = 1.2))
            SegmentationFolder.Write(seg, d.Path)
            let back = SegmentationFolder.Load(d.Path, 48, 1)
            Expect.equal back.Images seg.Images "images"
            Expect.equal back.Masks seg.Masks "binary masks (written 0/255) read back as 0/1"
            Expect.equal back.Boxes seg.Boxes "boxes recomputed from the masks"
            Expect.equal back.NumClasses 2 "binary"
            File.Delete(Path.Combine(d.Path, "masks", "000003.png"))
            throwsWith [ "000003" ] (fun () -> SegmentationFolder.Load(d.Path, 48, 1)) |> ignore
            ignore src
        }
    ]

let views =
    testList "views" [
        test "class subsets keep only those classes and relabel them 0..k-1" {
            let s = indexed 100 10
            let hi = s.SelectClasses(5, 6, 7, 8, 9)
            Expect.equal hi.Count 50 "half the items"
            Expect.equal hi.Classes [| "c5"; "c6"; "c7"; "c8"; "c9" |] "class names"
            for i in 0 .. hi.Count - 1 do
                Expect.equal hi.Labels[i] (itemId hi i % 10 - 5) "label remapped from the original class"
        }
        testProp "k-shot takes k per class, deterministically from the seed" (fun (seed: int) (k0: byte) ->
            let k = int k0 % 5 + 1
            let s = indexed 60 6
            let a = s.KShot(k, seed)
            Expect.equal (a.ClassCounts()) (Array.create 6 k) "k per class"
            Expect.equal a.Pixels (s.KShot(k, seed).Pixels) "same seed, same items"
            let ids = [ for i in 0 .. a.Count - 1 -> itemId a i ]
            Expect.equal (List.distinct ids) ids "no item twice")
        testProp "split is a seeded partition" (fun (seed: int) ->
            let s = indexed 50 5
            let struct (tr, va) = s.Split(0.2, seed)
            Expect.equal va.Count 10 "20 %"
            let ids (d: ImageDataset) = set [ for i in 0 .. d.Count - 1 -> itemId d i ]
            Expect.equal (Set.union (ids tr) (ids va)) (set [ 0 .. 49 ]) "together they are the whole set"
            Expect.isEmpty (Set.intersect (ids tr) (ids va)) "disjoint"
            let struct (tr2, _) = s.Split(0.2, seed)
            Expect.equal tr2.Pixels tr.Pixels "deterministic")
        test "take-first-N" {
            let s = (indexed 30 3).Take(7)
            Expect.equal [ for i in 0 .. 6 -> itemId s i ] [ 0 .. 6 ] "the first seven"
        }
    ]

let composed =
    testList "composed segmentation" [
        let source = lazy (if fashionInstalled then FashionMnist.Load(train = false).Take(500) else indexed 500 10)
        test "deterministic from the seed, masks are the objects' bright pixels, boxes enclose them" {
            let src = if fashionInstalled then source.Force() else ImageDataset(Array.init (50 * 784) (fun i -> byte (i % 200)), Array.init 50 (fun i -> i % 10), 1, 28, 28, FashionMnist.ClassNames)
            let a = ComposedSegmentation.Create(src, 20, 11)
            let b = ComposedSegmentation.Create(src, 20, 11)
            let c = ComposedSegmentation.Create(src, 20, 12)
            Expect.equal a.Images b.Images "same seed, same images"
            Expect.equal a.Masks b.Masks "same seed, same masks"
            Expect.notEqual a.Images c.Images "another seed, other images"
            Expect.equal (a.Height, a.Width, a.NumClasses) (64, 64, 2) "64x64 binary"
            for i in 0 .. a.Images.Length - 1 do
                Expect.equal (a.Masks[i] = 1uy) (a.Images[i] > 32uy) "mask = pixel above threshold"
            for n in 0 .. a.Count - 1 do
                let x0, y0, x1, y1 = int a.Boxes[4 * n], int a.Boxes[4 * n + 1], int a.Boxes[4 * n + 2], int a.Boxes[4 * n + 3]
                let mutable outside = 0
                let mutable inside = 0
                for y in 0 .. 63 do
                    for x in 0 .. 63 do
                        if a.Masks[n * 4096 + y * 64 + x] = 1uy then
                            if x >= x0 && x < x1 && y >= y0 && y < y1 then inside <- inside + 1 else outside <- outside + 1
                Expect.equal outside 0 "no foreground outside the box"
                Expect.isGreaterThan inside 0 "the box holds the objects"
                let px, py = int a.Points[2 * n], int a.Points[2 * n + 1]
                Expect.equal a.Masks[n * 4096 + py * 64 + px] 1uy "the point prompt is on an object"
        }
        test "class masks hold class + 1" {
            let src = ImageDataset(Array.create (10 * 784) 200uy, Array.init 10 id, 1, 28, 28, FashionMnist.ClassNames)
            let s = ComposedSegmentation.Create(src, 10, 1, ComposeOptions(MinObjects = 1, MaxObjects = 1, ClassMasks = true))
            Expect.equal s.NumClasses 11 "10 classes + background"
            Expect.isGreaterThan (s.Masks |> Array.max) 1uy "class indices above 1 appear"
        }
        test "objects too large for the canvas are refused" {
            let src = indexed 10 2
            let big = ImageDataset(Array.zeroCreate (10 * 784), Array.zeroCreate 10, 1, 28, 28, [| "x" |])
            throwsWith [ "canvas" ] (fun () -> ComposedSegmentation.Create(big, 2, 0, ComposeOptions(Canvas = 32))) |> ignore
            ignore src
        }
    ]

let loading =
    testList "loader" [
        let ids (b: Batch) = [ for i in 0L .. b.Inputs.shape[0] - 1L -> int (round (b.Inputs[i, 0L, 0L, 0L].item<float32>() * 255.0f)) + 256 * int (round (b.Inputs[i, 0L, 0L, 1L].item<float32>() * 255.0f)) ]
        test "every item once per epoch, seeded order per epoch, resumable at any batch" {
            let s = indexed 70 7
            let dl = DataLoader(s, 16, true, 5)
            let epoch e start = [ for b in dl.Epoch(e, start) do use b = b in yield! ids b ]
            let e0 = epoch 0 0
            Expect.equal (List.sort e0) [ 0 .. 69 ] "a permutation of all items"
            Expect.notEqual e0 [ 0 .. 69 ] "shuffled"
            Expect.notEqual (epoch 1 0) e0 "another order in the next epoch"
            Expect.equal (epoch 0 0) e0 "the same order again"
            Expect.equal (epoch 0 2) (List.skip 32 e0) "starting at batch 2 continues the same order"
            Expect.equal dl.BatchesPerEpoch 5 "70 / 16 rounded up"
            let noPrefetch = DataLoader(s, 16, true, 5, prefetch = 0)
            Expect.equal [ for b in noPrefetch.Epoch(0) do use b = b in yield! ids b ] e0 "prefetch changes nothing"
            let labels = [ for b in dl.Epoch(0) do use b = b in yield! b.Targets.data<int64>().ToArray() |> Array.map int ]
            Expect.equal labels (e0 |> List.map (fun i -> i % 7)) "targets follow their images"
        }
        test "abandoning an epoch early stops the worker and disposes pending batches" {
            let s = indexed 200 2
            let dl = DataLoader(s, 4, true, 1, prefetch = 3)
            for _ in 1 .. 20 do
                use e = dl.Epoch(0).GetEnumerator()
                Expect.isTrue (e.MoveNext()) "first batch"
                e.Current.Dispose()
        }
        test "segmentation batches: masks as int64, boxes and points, joint flip" {
            let src = ImageDataset(Array.init (20 * 784) (fun i -> byte ((i * 7) % 256)), Array.init 20 (fun i -> i % 10), 1, 28, 28, FashionMnist.ClassNames)
            let seg = ComposedSegmentation.Create(src, 8, 2, ComposeOptions(Canvas = 32, MaxScale = 1.1))
            let plain = DataLoader(seg, 8, false, 0)
            let flipped = DataLoader(seg, 8, false, 0, Transforms(HorizontalFlip = true))
            use a = Seq.head (plain.Epoch 0)
            use b = Seq.head (flipped.Epoch 0)
            Expect.equal (a.Targets.dtype) torch.ScalarType.Int64 "masks are class indices"
            Expect.equal (a.Boxes.shape) [| 8L; 4L |] "boxes"
            let mutable nflip = 0
            for i in 0L .. 7L do
                let isSame = same (a.Inputs[i]) (b.Inputs[i])
                if not isSame then
                    nflip <- nflip + 1
                    Expect.isTrue (same (a.Inputs[i].flip(2L)) (b.Inputs[i])) "image flipped"
                    Expect.isTrue (same (a.Targets[i].flip(1L)) (b.Targets[i])) "mask flipped with it"
                    Expect.equal (b.Boxes[i, 0L].item<float32>()) (32.0f - a.Boxes[i, 2L].item<float32>()) "box flipped"
            Expect.isTrue (nflip > 0 && nflip < 8) $"some but not all flipped ({nflip})"
        }
    ]

let transforms =
    testList "transforms" [
        test "resize, grey to RGB and normalise" {
            use x = torch.rand(2L, 1L, 8L, 8L)
            let t = Transforms(Size = 16, GreyToRgb = true, Mean = [| 0.5f; 0.5f; 0.5f |], Std = [| 0.25f; 0.25f; 0.25f |])
            use y = t.Apply(x, Random 0)
            Expect.equal y.shape [| 2L; 3L; 16L; 16L |] "shape"
            use back = Transforms.Resize(x, 16, 16)
            Expect.isTrue (y.narrow(1L, 1L, 1L).allclose((back - 0.5) / 0.25, 1e-5, 1e-6)) "normalised channel = (x - mean) / std"
        }
        test "random crop with padding keeps the shape and shifts content; seeded" {
            use x = torch.arange(64.0f).reshape(1L, 1L, 8L, 8L).expand(4L, -1L, -1L, -1L).contiguous()
            use a = Transforms.RandomCrop(x, 2, Random 3)
            use b = Transforms.RandomCrop(x, 2, Random 3)
            Expect.equal a.shape x.shape "shape"
            Expect.isTrue (same a b) "same seed, same crops"
            Expect.isFalse (same a x) "content moved in some image"
        }
    ]

let tests = testList "Data" [ idx; cifar; folders; views; composed; loading; transforms ]
