namespace Lora.Core.Data;

/// Segmentation pairs on disk: root/images/NAME.png and root/masks/NAME.png (masks matched by file
/// name without extension). A mask whose values are only 0 and 255 is binary (255 → class 1);
/// otherwise the grey value is the class index.
public static class SegmentationFolder
{
    public static SegmentationDataset Load(string root, int size, int channels = 3, int? numClasses = null)
    {
        var imgDir = Path.Combine(root, "images");
        var maskDir = Path.Combine(root, "masks");
        if (!Directory.Exists(imgDir) || !Directory.Exists(maskDir))
            throw new DirectoryNotFoundException($"{root}: a segmentation folder needs images/ and masks/ sub-folders with matching file names.");
        var images = Directory.GetFiles(imgDir).Where(ImageFile.IsImage).OrderBy(f => f, StringComparer.Ordinal).ToArray();
        if (images.Length == 0) throw new InvalidDataException($"{imgDir}: no images.");
        var masks = Directory.GetFiles(maskDir).Where(ImageFile.IsImage)
            .GroupBy(f => Path.GetFileNameWithoutExtension(f)).ToDictionary(g => g.Key, g => g.First());
        var missing = images.Select(Path.GetFileNameWithoutExtension).Where(s => !masks.ContainsKey(s!)).Take(5).ToArray();
        if (missing.Length > 0)
            throw new InvalidDataException($"{maskDir}: no mask for image(s) {string.Join(", ", missing)} (masks are matched by file name without extension).");

        int n = images.Length, isz = channels * size * size, msz = size * size;
        var im = new byte[(long)n * isz];
        var ms = new byte[(long)n * msz];
        ImageFile.ForEachParallel(n, i =>
        {
            var (p, h, w) = ImageFile.Read(images[i], channels);
            ImageFile.ResizeBilinear(p, channels, h, w, size, size).CopyTo(im, (long)i * isz);
            var mp = masks[Path.GetFileNameWithoutExtension(images[i])!];
            var (m, mh, mw) = ImageFile.Read(mp, 1);
            if (mh != h || mw != w)
                throw new InvalidDataException($"{mp}: mask is {mw}x{mh} but its image {images[i]} is {w}x{h}.");
            ImageFile.ResizeNearest(m, mh, mw, size, size).CopyTo(ms, (long)i * msz);
        });
        bool binary = ms.All(v => v is 0 or 255);
        if (binary) for (int i = 0; i < ms.Length; i++) ms[i] = (byte)(ms[i] == 255 ? 1 : 0);
        int k = numClasses ?? (binary ? 2 : Math.Max(2, ms.Max() + 1));
        var bad = Array.FindIndex(ms, v => v >= k);
        if (bad >= 0)
            throw new InvalidDataException($"{images[bad / msz]}: its mask holds class {ms[bad]}, outside the {k} classes.");
        return new SegmentationDataset(im, ms, n, channels, size, size, k);
    }

    /// Writes image/mask PNG pairs (binary masks as 0/255 so they are visible; others as class indices).
    public static void Write(SegmentationDataset set, string root)
    {
        var imgDir = Path.Combine(root, "images");
        var maskDir = Path.Combine(root, "masks");
        Directory.CreateDirectory(imgDir);
        Directory.CreateDirectory(maskDir);
        for (int i = 0; i < set.Count; i++)
        {
            var name = $"{i:D6}.png";
            Png.Write(Path.Combine(imgDir, name), set.Images.AsSpan(i * set.ImageSize, set.ImageSize), set.Channels, set.Height, set.Width);
            var m = set.Masks.AsSpan(i * set.MaskSize, set.MaskSize).ToArray();
            if (set.IsBinary) for (int j = 0; j < m.Length; j++) m[j] = (byte)(m[j] != 0 ? 255 : 0);
            Png.Write(Path.Combine(maskDir, name), m, 1, set.Height, set.Width);
        }
    }
}
