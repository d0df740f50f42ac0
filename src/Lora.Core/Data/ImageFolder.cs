namespace Lora.Core.Data;

/// An ImageFolder tree: one sub-folder per class (sorted by ordinal name = class index), image files
/// inside. Every image is decoded to the given channel count and resized to size×size.
public static class ImageFolder
{
    public static ImageDataset Load(string root, int size, int channels = 3)
    {
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"image folder not found: {root}");
        if (size <= 0) throw new ArgumentOutOfRangeException(nameof(size), "the image size must be positive.");
        var classDirs = Directory.GetDirectories(root).OrderBy(d => Path.GetFileName(d), StringComparer.Ordinal).ToArray();
        if (classDirs.Length == 0)
            throw new InvalidDataException($"{root}: no class sub-folders; an ImageFolder tree has one folder per class with images inside.");
        var classes = classDirs.Select(d => Path.GetFileName(d)!).ToArray();
        var files = new List<(string Path, int Label)>();
        for (int c = 0; c < classDirs.Length; c++)
        {
            var imgs = Directory.GetFiles(classDirs[c]).Where(ImageFile.IsImage).OrderBy(f => f, StringComparer.Ordinal).ToArray();
            if (imgs.Length == 0) throw new InvalidDataException($"{classDirs[c]}: the class folder '{classes[c]}' has no images (png/jpg/jpeg/bmp).");
            files.AddRange(imgs.Select(f => (f, c)));
        }
        int n = channels * size * size;
        var px = new byte[(long)files.Count * n];
        ImageFile.ForEachParallel(files.Count, i =>
        {
            var (p, h, w) = ImageFile.Read(files[i].Path, channels);
            ImageFile.ResizeBilinear(p, channels, h, w, size, size).CopyTo(px, (long)i * n);
        });
        return new ImageDataset(px, files.Select(f => f.Label).ToArray(), channels, size, size, classes);
    }

    /// Writes a set as an ImageFolder tree of PNG files (class folder names made file-safe).
    public static void Write(ImageDataset set, string root)
    {
        var dirs = set.Classes.Select((c, i) => Path.Combine(root, $"{i:D3}_{SafeName(c)}")).ToArray();
        foreach (var d in dirs) Directory.CreateDirectory(d);
        for (int i = 0; i < set.Count; i++)
            Png.Write(Path.Combine(dirs[set.Labels[i]], $"{i:D6}.png"), set.Image(i), set.Channels, set.Height, set.Width);
    }

    internal static string SafeName(string s) =>
        new(s.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '_' ? ch : '_').ToArray());
}
