using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Data;

/// One batch on its device. Inputs: float [B,C,H,W]. Targets: class indices (int64 [B]) or masks
/// (int64 [B,H,W]). Boxes [B,4] and Points [B,2] (float, input pixels) for segmentation sets.
public sealed class Batch : IDisposable
{
    public required Tensor Inputs { get; init; }
    public required Tensor Targets { get; init; }
    public Tensor? Boxes { get; init; }
    public Tensor? Points { get; init; }
    /// Position of the batch within its epoch.
    public int Index { get; init; }
    public int Size => (int)Inputs.shape[0];

    public void Dispose()
    {
        Inputs.Dispose(); Targets.Dispose(); Boxes?.Dispose(); Points?.Dispose();
    }
}

/// Yields batches of a classification or segmentation set. The order of an epoch is a seeded
/// permutation of (seed, epoch) and the random transforms of a batch draw from (seed, epoch,
/// batch), so an epoch restarted at any batch sees exactly what it would have seen. Batches are
/// built on a worker thread (bytes → tensors → device) a few ahead of the consumer.
public sealed class DataLoader
{
    readonly Func<int[], Random, int, Batch> make;
    readonly int count;

    public int BatchSize { get; }
    public bool Shuffle { get; }
    public int Seed { get; }
    public bool DropLast { get; }
    public int Prefetch { get; }
    public Device Device { get; }

    public int Count => count;
    public int BatchesPerEpoch => DropLast ? count / BatchSize : (count + BatchSize - 1) / BatchSize;

    DataLoader(int count, int batchSize, bool shuffle, int seed, bool dropLast, int prefetch, Device? device, Func<int[], Random, int, Batch> make)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), "the batch size must be positive.");
        if (count == 0) throw new ArgumentException("the data set is empty.");
        if (dropLast && count < batchSize) throw new ArgumentException($"{count} items make no full batch of {batchSize} (drop-last is on).");
        this.count = count; this.make = make;
        BatchSize = batchSize; Shuffle = shuffle; Seed = seed; DropLast = dropLast; Prefetch = Math.Max(0, prefetch);
        Device = device ?? CPU;
    }

    public DataLoader(ImageDataset data, int batchSize, bool shuffle, int seed, Transforms? transforms = null,
        Device? device = null, bool dropLast = false, int prefetch = 2)
        : this(data.Count, batchSize, shuffle, seed, dropLast, prefetch, device,
               (idx, rng, bi) => MakeClassification(data, idx, rng, bi, transforms ?? Transforms.None, device ?? CPU))
    { }

    public DataLoader(SegmentationDataset data, int batchSize, bool shuffle, int seed, Transforms? transforms = null,
        Device? device = null, bool dropLast = false, int prefetch = 2)
        : this(data.Count, batchSize, shuffle, seed, dropLast, prefetch, device,
               (idx, rng, bi) => MakeSegmentation(data, idx, rng, bi, transforms ?? Transforms.None, device ?? CPU))
    { }

    /// The item order of an epoch.
    public int[] Order(int epoch) =>
        Shuffle ? Seeded.Permutation(count, Seeded.Mix(Seed, epoch)) : Enumerable.Range(0, count).ToArray();

    /// The batches of one epoch from <paramref name="startBatch"/> on. The caller disposes each batch.
    public IEnumerable<Batch> Epoch(int epoch, int startBatch = 0)
    {
        var order = Order(epoch);
        var jobs = Enumerable.Range(startBatch, Math.Max(0, BatchesPerEpoch - startBatch)).ToArray();
        Batch Build(int b)
        {
            var idx = order.Skip(b * BatchSize).Take(BatchSize).ToArray();
            return make(idx, new Random(Seeded.Mix(Seed, epoch, b, 0x5eed)), b);
        }
        if (Prefetch == 0)
        {
            foreach (var b in jobs) yield return Build(b);
            yield break;
        }
        using var queue = new BlockingCollection<Batch>(Prefetch);
        using var cts = new CancellationTokenSource();
        Exception? failure = null;
        var worker = new Thread(() =>
        {
            try
            {
                foreach (var b in jobs)
                {
                    var batch = Build(b);
                    try { queue.Add(batch, cts.Token); }
                    catch (OperationCanceledException) { batch.Dispose(); return; }
                }
            }
            catch (Exception e) { failure = e; }
            finally { queue.CompleteAdding(); }
        }) { IsBackground = true, Name = "DataLoader prefetch" };
        worker.Start();
        try
        {
            foreach (var batch in queue.GetConsumingEnumerable())
                yield return batch;
            if (failure is not null) throw new InvalidOperationException($"building a batch failed: {failure.Message}", failure);
        }
        finally
        {
            cts.Cancel();
            worker.Join();
            while (queue.TryTake(out var left)) left.Dispose();
        }
    }

    static Tensor Gather(byte[] src, int itemSize, int[] idx, long[] shape)
    {
        var buf = new byte[(long)idx.Length * itemSize];
        for (int j = 0; j < idx.Length; j++) Buffer.BlockCopy(src, idx[j] * itemSize, buf, j * itemSize, itemSize);
        return tensor(buf, shape, ScalarType.Byte);
    }

    static Batch MakeClassification(ImageDataset d, int[] idx, Random rng, int bi, Transforms t, Device device)
    {
        using var scope = NewDisposeScope();
        using Scalar byteMax = 255f;
        var bytes = Gather(d.Pixels, d.ImageSize, idx, [idx.Length, d.Channels, d.Height, d.Width]);
        var x = t.Apply(bytes.to(ScalarType.Float32).div_(byteMax), rng).to(device);
        var y = tensor(idx.Select(i => (long)d.Labels[i]).ToArray(), device: device);
        return new Batch { Inputs = x.MoveToOuterDisposeScope(), Targets = y.MoveToOuterDisposeScope(), Index = bi };
    }

    static Batch MakeSegmentation(SegmentationDataset d, int[] idx, Random rng, int bi, Transforms t, Device device)
    {
        using var scope = NewDisposeScope();
        using Scalar byteMax = 255f;
        int b = idx.Length;
        var x = Gather(d.Images, d.ImageSize, idx, [b, d.Channels, d.Height, d.Width]).to(ScalarType.Float32).div_(byteMax);
        var m = Gather(d.Masks, d.MaskSize, idx, [b, d.Height, d.Width]).to(ScalarType.Int64);
        var boxes = new float[b * 4];
        var points = new float[b * 2];
        for (int j = 0; j < b; j++)
        {
            Array.Copy(d.Boxes, idx[j] * 4, boxes, j * 4, 4);
            Array.Copy(d.Points, idx[j] * 2, points, j * 2, 2);
        }
        int h = d.Height, w = d.Width;
        if (t.Size is int s && (s != h || s != w))
        {
            x = Transforms.Resize(x, s, s);
            m = Transforms.ResizeMask(m, s, s);
            float fx = (float)s / w, fy = (float)s / h;
            for (int j = 0; j < b; j++)
            {
                boxes[4 * j] *= fx; boxes[4 * j + 1] *= fy; boxes[4 * j + 2] *= fx; boxes[4 * j + 3] *= fy;
                points[2 * j] = (points[2 * j] + 0.5f) * fx - 0.5f; points[2 * j + 1] = (points[2 * j + 1] + 0.5f) * fy - 0.5f;
            }
            h = w = s;
        }
        if (t.HorizontalFlip)
        {
            var flip = Transforms.FlipMask(b, rng);
            x = Transforms.Flip(x, flip);
            m = Transforms.Flip(m, flip);
            for (int j = 0; j < b; j++)
                if (flip[j])
                {
                    (boxes[4 * j], boxes[4 * j + 2]) = (w - boxes[4 * j + 2], w - boxes[4 * j]);
                    points[2 * j] = w - 1 - points[2 * j];
                }
        }
        x = (t with { Size = null, CropPadding = 0, HorizontalFlip = false }).Apply(x, rng).to(device);
        var bx = tensor(boxes, [b, 4], device: device);
        var pt = tensor(points, [b, 2], device: device);
        m = m.to(device);
        return new Batch
        {
            Inputs = x.MoveToOuterDisposeScope(), Targets = m.MoveToOuterDisposeScope(),
            Boxes = bx.MoveToOuterDisposeScope(), Points = pt.MoveToOuterDisposeScope(), Index = bi,
        };
    }
}
