namespace Lora.Core.Data;

/// An in-memory segmentation set: N images (C×H×W bytes), a class-index mask per image (H×W bytes:
/// 0 background, 1.. classes; a binary set has NumClasses = 2), and per image a box prompt
/// (x0, y0, x1, y1 in pixels) and a point prompt (x, y) on the object.
public sealed class SegmentationDataset
{
    public byte[] Images { get; }
    public byte[] Masks { get; }
    public float[] Boxes { get; }
    public float[] Points { get; }
    public int Channels { get; }
    public int Height { get; }
    public int Width { get; }
    public int NumClasses { get; }
    public int Count { get; }

    public int ImageSize => Channels * Height * Width;
    public int MaskSize => Height * Width;

    public SegmentationDataset(byte[] images, byte[] masks, int count, int channels, int height, int width, int numClasses,
        float[]? boxes = null, float[]? points = null)
    {
        if ((long)count * channels * height * width != images.LongLength)
            throw new ArgumentException($"{count} images of {channels}x{height}x{width} need {(long)count * channels * height * width} bytes, got {images.LongLength}.");
        if ((long)count * height * width != masks.LongLength)
            throw new ArgumentException($"{count} masks of {height}x{width} need {(long)count * height * width} bytes, got {masks.LongLength}.");
        if (numClasses < 2) throw new ArgumentException("a segmentation set needs at least 2 classes (background and one object class).");
        for (int i = 0; i < masks.Length; i++)
            if (masks[i] >= numClasses) throw new ArgumentException($"mask {i / (height * width)} holds class {masks[i]}, outside 0..{numClasses - 1}.");
        Images = images; Masks = masks; Count = count; Channels = channels; Height = height; Width = width; NumClasses = numClasses;
        (var b, var p) = PromptsFromMasks(masks, count, height, width);
        Boxes = boxes ?? b;
        Points = points ?? p;
        if (Boxes.Length != 4 * count || Points.Length != 2 * count) throw new ArgumentException("boxes need 4 numbers and points 2 per image.");
    }

    public bool IsBinary => NumClasses == 2;

    public SegmentationDataset Subset(IReadOnlyList<int> indices)
    {
        var im = new byte[(long)indices.Count * ImageSize];
        var ms = new byte[(long)indices.Count * MaskSize];
        var bx = new float[indices.Count * 4];
        var pt = new float[indices.Count * 2];
        for (int j = 0; j < indices.Count; j++)
        {
            int i = indices[j];
            if (i < 0 || i >= Count) throw new ArgumentOutOfRangeException(nameof(indices), $"index {i} is outside 0..{Count - 1}.");
            Buffer.BlockCopy(Images, i * ImageSize, im, j * ImageSize, ImageSize);
            Buffer.BlockCopy(Masks, i * MaskSize, ms, j * MaskSize, MaskSize);
            Array.Copy(Boxes, i * 4, bx, j * 4, 4);
            Array.Copy(Points, i * 2, pt, j * 2, 2);
        }
        return new SegmentationDataset(im, ms, indices.Count, Channels, Height, Width, NumClasses, bx, pt);
    }

    public (SegmentationDataset Train, SegmentationDataset Validation) Split(double validationFraction, int seed)
    {
        var (tr, va) = Seeded.SplitIndices(Count, validationFraction, seed);
        return (Subset(tr), Subset(va));
    }

    public SegmentationDataset Take(int n) => Subset(Enumerable.Range(0, Math.Min(n, Count)).ToArray());

    /// Box = bounding box of the foreground (x1, y1 exclusive); point = the foreground pixel nearest
    /// the box centre. An empty mask gets the whole image as box and its centre as point.
    public static (float[] Boxes, float[] Points) PromptsFromMasks(byte[] masks, int count, int height, int width)
    {
        var boxes = new float[count * 4];
        var points = new float[count * 2];
        for (int n = 0; n < count; n++)
        {
            int x0 = width, y0 = height, x1 = -1, y1 = -1;
            int off = n * height * width;
            for (int y = 0; y < height; y++)
                for (int x = 0; x < width; x++)
                    if (masks[off + y * width + x] != 0)
                    {
                        if (x < x0) x0 = x; if (x > x1) x1 = x;
                        if (y < y0) y0 = y; if (y > y1) y1 = y;
                    }
            if (x1 < 0) { x0 = 0; y0 = 0; x1 = width - 1; y1 = height - 1; }
            boxes[4 * n] = x0; boxes[4 * n + 1] = y0; boxes[4 * n + 2] = x1 + 1; boxes[4 * n + 3] = y1 + 1;
            double cx = (x0 + x1) / 2.0, cy = (y0 + y1) / 2.0, best = double.MaxValue;
            float px = (float)cx, py = (float)cy;
            for (int y = y0; y <= y1; y++)
                for (int x = x0; x <= x1; x++)
                    if (masks[off + y * width + x] != 0)
                    {
                        double d = (x - cx) * (x - cx) + (y - cy) * (y - cy);
                        if (d < best) { best = d; px = x; py = y; }
                    }
            points[2 * n] = px; points[2 * n + 1] = py;
        }
        return (boxes, points);
    }
}
