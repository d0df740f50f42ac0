namespace Lora.Core.Data;

/// An in-memory labelled image set: N images of C×H×W unsigned bytes (row-major, channel-first)
/// and a class index per image. Views (subsets, k-shot, splits) copy only what they keep.
public sealed class ImageDataset
{
    public byte[] Pixels { get; }
    public int[] Labels { get; }
    public int Channels { get; }
    public int Height { get; }
    public int Width { get; }
    public IReadOnlyList<string> Classes { get; }

    public int Count => Labels.Length;
    public int ImageSize => Channels * Height * Width;
    public int NumClasses => Classes.Count;

    public ImageDataset(byte[] pixels, int[] labels, int channels, int height, int width, IReadOnlyList<string> classes)
    {
        if (channels <= 0 || height <= 0 || width <= 0) throw new ArgumentException($"image shape {channels}x{height}x{width} is not valid.");
        if ((long)labels.Length * channels * height * width != pixels.LongLength)
            throw new ArgumentException($"{labels.Length} images of {channels}x{height}x{width} need {(long)labels.Length * channels * height * width} bytes, got {pixels.LongLength}.");
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] < 0 || labels[i] >= classes.Count)
                throw new ArgumentException($"label {labels[i]} of image {i} is outside the {classes.Count} classes.");
        Pixels = pixels; Labels = labels; Channels = channels; Height = height; Width = width; Classes = classes;
    }

    public ReadOnlySpan<byte> Image(int i) => Pixels.AsSpan(i * ImageSize, ImageSize);

    /// The images at the given indices, in that order (labels and classes unchanged).
    public ImageDataset Subset(IReadOnlyList<int> indices)
    {
        int n = ImageSize;
        var px = new byte[(long)indices.Count * n];
        var lb = new int[indices.Count];
        for (int j = 0; j < indices.Count; j++)
        {
            int i = indices[j];
            if (i < 0 || i >= Count) throw new ArgumentOutOfRangeException(nameof(indices), $"index {i} is outside 0..{Count - 1}.");
            Buffer.BlockCopy(Pixels, i * n, px, j * n, n);
            lb[j] = Labels[i];
        }
        return new ImageDataset(px, lb, Channels, Height, Width, Classes);
    }

    /// Only the images of the given classes, relabelled 0..k-1 in the order given
    /// (e.g. classes 0-4 to pretrain, 5-9 to tune).
    public ImageDataset SelectClasses(params int[] classes)
    {
        if (classes.Length == 0) throw new ArgumentException("select at least one class.");
        var map = new Dictionary<int, int>();
        foreach (var c in classes)
        {
            if (c < 0 || c >= NumClasses) throw new ArgumentOutOfRangeException(nameof(classes), $"class {c} is outside 0..{NumClasses - 1}.");
            if (!map.TryAdd(c, map.Count)) throw new ArgumentException($"class {c} is selected twice.");
        }
        var idx = Enumerable.Range(0, Count).Where(i => map.ContainsKey(Labels[i])).ToArray();
        var sub = Subset(idx);
        var labels = sub.Labels.Select(l => map[l]).ToArray();
        return new ImageDataset(sub.Pixels, labels, Channels, Height, Width, classes.Select(c => Classes[c]).ToArray());
    }

    /// k images per class, chosen by seed (the first k of a seeded shuffle of each class),
    /// ordered by class then by original position.
    public ImageDataset KShot(int k, int seed)
    {
        if (k <= 0) throw new ArgumentOutOfRangeException(nameof(k), "k must be positive.");
        var perm = Seeded.Permutation(Count, seed);
        var taken = new int[NumClasses];
        var keep = new List<int>();
        foreach (var i in perm)
            if (taken[Labels[i]] < k) { taken[Labels[i]]++; keep.Add(i); }
        for (int c = 0; c < NumClasses; c++)
            if (taken[c] < k) throw new ArgumentException($"class '{Classes[c]}' has only {taken[c]} images, fewer than k = {k}.");
        keep.Sort((a, b) => Labels[a] != Labels[b] ? Labels[a].CompareTo(Labels[b]) : a.CompareTo(b));
        return Subset(keep);
    }

    /// A seeded random split: a validation fraction and the rest for training (both keep the
    /// original order of their items).
    public (ImageDataset Train, ImageDataset Validation) Split(double validationFraction, int seed)
    {
        var (tr, va) = Seeded.SplitIndices(Count, validationFraction, seed);
        return (Subset(tr), Subset(va));
    }

    /// The first n images (all when n ≥ Count).
    public ImageDataset Take(int n) => Subset(Enumerable.Range(0, Math.Min(n, Count)).ToArray());

    /// Images as an uint8 array per class count, for checks and summaries.
    public int[] ClassCounts()
    {
        var c = new int[NumClasses];
        foreach (var l in Labels) c[l]++;
        return c;
    }
}

/// Deterministic permutations from a seed (System.Random with a seed is stable across .NET versions
/// for the seeded legacy algorithm).
public static class Seeded
{
    public static int[] Permutation(int n, int seed)
    {
        var p = Enumerable.Range(0, n).ToArray();
        new Random(seed).Shuffle(p);
        return p;
    }

    /// A seed derived from several integers (e.g. seed, epoch, batch) so streams do not overlap.
    public static int Mix(params long[] parts)
    {
        ulong h = 0x9E3779B97F4A7C15UL;
        foreach (var p in parts)
        {
            h ^= (ulong)p + 0x9E3779B97F4A7C15UL + (h << 6) + (h >> 2);
            h *= 0xBF58476D1CE4E5B9UL;
            h ^= h >> 31;
        }
        return (int)(h & 0x7FFFFFFF);
    }

    public static (int[] Train, int[] Validation) SplitIndices(int n, double validationFraction, int seed)
    {
        if (validationFraction <= 0 || validationFraction >= 1)
            throw new ArgumentOutOfRangeException(nameof(validationFraction), $"the validation fraction must be in (0, 1), got {validationFraction}.");
        int nv = (int)Math.Round(n * validationFraction);
        if (nv == 0 || nv == n)
            throw new InvalidDataException($"splitting {n} item(s) with val_fraction {validationFraction} leaves {(nv == 0 ? "no validation" : "no training")} item: " +
                (nv == 0 ? "raise val_fraction or add images" : "lower val_fraction or add images"));
        var perm = Permutation(n, seed);
        var va = perm.Take(nv).Order().ToArray();
        var tr = perm.Skip(nv).Order().ToArray();
        return (tr, va);
    }
}
