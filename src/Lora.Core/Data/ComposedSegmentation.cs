namespace Lora.Core.Data;

/// Options for <see cref="ComposedSegmentation"/>.
/// <param name="Canvas">side of the square canvas in pixels</param>
/// <param name="MinObjects">fewest objects per canvas</param>
/// <param name="MaxObjects">most objects per canvas</param>
/// <param name="MinScale">smallest object scale relative to the source size</param>
/// <param name="MaxScale">largest object scale</param>
/// <param name="Threshold">a pixel brighter than this belongs to its object's mask</param>
/// <param name="ClassMasks">masks hold class + 1 per object (K = source classes + 1) instead of 0/1</param>
public sealed record ComposeOptions(
    int Canvas = 64, int MinObjects = 1, int MaxObjects = 3, double MinScale = 0.8, double MaxScale = 1.6,
    byte Threshold = 32, bool ClassMasks = false);

/// A segmentation set built from real images (Fashion-MNIST items) placed on a larger dark canvas
/// at seeded positions and scales; each object's mask comes from its own pixels (brighter than a
/// threshold), later objects drawn over earlier ones. The prompts are the box around all objects'
/// foreground and the foreground pixel nearest its centre. Deterministic from the seed.
public static class ComposedSegmentation
{
    public static SegmentationDataset Create(ImageDataset source, int count, int seed, ComposeOptions? options = null)
    {
        var o = options ?? new ComposeOptions();
        if (source.Channels != 1) throw new ArgumentException("composition expects grey source images (1 channel).");
        if (o.MinObjects < 1 || o.MaxObjects < o.MinObjects) throw new ArgumentException($"object counts {o.MinObjects}..{o.MaxObjects} are not valid.");
        if (o.MinScale <= 0 || o.MaxScale < o.MinScale) throw new ArgumentException($"scales {o.MinScale}..{o.MaxScale} are not valid.");
        int side = o.Canvas, plane = side * side;
        int maxObj = (int)Math.Round(Math.Max(source.Height, source.Width) * o.MaxScale);
        if (maxObj > side) throw new ArgumentException($"objects up to {maxObj} px do not fit a {side} px canvas; lower MaxScale or enlarge the canvas.");
        int k = o.ClassMasks ? source.NumClasses + 1 : 2;
        if (k > 256) throw new ArgumentException("too many classes for byte masks.");
        var images = new byte[(long)count * plane];
        var masks = new byte[(long)count * plane];
        var rng = new Random(seed);
        for (int n = 0; n < count; n++)
        {
            int objects = rng.Next(o.MinObjects, o.MaxObjects + 1);
            for (int j = 0; j < objects; j++)
            {
                int item = rng.Next(source.Count);
                double scale = o.MinScale + rng.NextDouble() * (o.MaxScale - o.MinScale);
                int h = Math.Max(1, (int)Math.Round(source.Height * scale));
                int w = Math.Max(1, (int)Math.Round(source.Width * scale));
                int y0 = rng.Next(side - h + 1), x0 = rng.Next(side - w + 1);
                var obj = ImageFile.ResizeBilinear(source.Image(item), 1, source.Height, source.Width, h, w);
                byte label = (byte)(o.ClassMasks ? source.Labels[item] + 1 : 1);
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                    {
                        byte v = obj[y * w + x];
                        if (v <= o.Threshold) continue; // the object's own background stays transparent
                        long p = (long)n * plane + (y0 + y) * side + x0 + x;
                        images[p] = v;
                        masks[p] = label;
                    }
            }
        }
        return new SegmentationDataset(images, masks, count, 1, side, side, k);
    }
}
