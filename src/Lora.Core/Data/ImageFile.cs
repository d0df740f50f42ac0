using StbImageSharp;

namespace Lora.Core.Data;

/// Decoding image files (PNG, JPEG, BMP, ... through StbImageSharp) to channel-first bytes, and
/// small byte-level resizes used while loading.
public static class ImageFile
{
    /// The most pixels one image may have (8192 × 8192), read from its header before decoding: a
    /// small PNG can claim 20000 × 20000 and decode to gigabytes.
    public const long MaxPixels = 8192L * 8192;
    /// Images above this many pixels are decoded one at a time, so parallel loaders do not multiply
    /// the largest decodes.
    const long LargePixels = 2048L * 2048;
    static readonly SemaphoreSlim LargeDecode = new(1, 1);

    /// Decodes a file to C×H×W bytes with C = 1 (grey) or 3 (RGB).
    public static (byte[] Pixels, int Height, int Width) Read(string path, int channels)
    {
        if (channels is not (1 or 3)) throw new ArgumentException($"images are read with 1 or 3 channels, got {channels}.");
        var bytes = Lora.Core.IO.InputFile.ReadAllBytes(path, Lora.Core.IO.InputFile.MaxImageBytes, "image");
        ImageInfo? info;
        try { info = ImageInfo.FromStream(new MemoryStream(bytes, writable: false)); }
        catch (Exception e) when (e is not IOException and not UnauthorizedAccessException) { info = null; }
        if (info is not { Width: > 0, Height: > 0 } header)
            throw new InvalidDataException($"{path}: cannot decode the image (its header is not a PNG, JPEG or BMP one, or claims an image too large to decode)");
        long pixels = (long)header.Width * header.Height;
        if (pixels > MaxPixels)
            throw new InvalidDataException($"{path}: the image is {header.Width}x{header.Height}, more than the {MaxPixels:N0} pixels allowed; resize it first");
        bool large = pixels > LargePixels;
        if (large) LargeDecode.Wait();
        ImageResult img;
        try
        {
            img = ImageResult.FromMemory(bytes, channels == 1 ? ColorComponents.Grey : ColorComponents.RedGreenBlue);
        }
        catch (Exception e) when (e is not IOException and not UnauthorizedAccessException)
        {
            var why = string.IsNullOrWhiteSpace(e.Message) ? "truncated or corrupt data" : e.Message.Trim();
            throw new InvalidDataException($"{path}: cannot decode the {header.Width}x{header.Height} image ({why}); is it a complete PNG/JPEG file?", e);
        }
        finally { if (large) LargeDecode.Release(); }
        if (img is null || img.Data is null || img.Width <= 0 || img.Height <= 0)
            throw new InvalidDataException($"{path}: cannot decode the image; is it a valid PNG/JPEG file?");
        int h = img.Height, w = img.Width, plane = h * w;
        var chw = new byte[channels * plane];
        for (int i = 0; i < plane; i++)
            for (int c = 0; c < channels; c++)
                chw[c * plane + i] = img.Data[i * channels + c];
        return (chw, h, w);
    }

    /// Runs body(0..count-1) in parallel; a failure surfaces as itself (the first one), not wrapped
    /// in "One or more errors occurred."
    public static void ForEachParallel(int count, Action<int> body)
    {
        try { Parallel.For(0, count, body); }
        catch (AggregateException e) when (e.Flatten().InnerExceptions.Count > 0)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.Flatten().InnerExceptions[0]).Throw();
        }
    }

    /// Bilinear resize of C×H×W bytes (half-pixel centres, like PyTorch's align_corners=false).
    public static byte[] ResizeBilinear(ReadOnlySpan<byte> src, int channels, int h, int w, int nh, int nw)
    {
        if (h == nh && w == nw) return src.ToArray();
        var dst = new byte[channels * nh * nw];
        double sy = (double)h / nh, sx = (double)w / nw;
        for (int y = 0; y < nh; y++)
        {
            double fy = Math.Max(0, (y + 0.5) * sy - 0.5);
            int y0 = Math.Min((int)fy, h - 1), y1 = Math.Min(y0 + 1, h - 1);
            double wy = fy - y0;
            for (int x = 0; x < nw; x++)
            {
                double fx = Math.Max(0, (x + 0.5) * sx - 0.5);
                int x0 = Math.Min((int)fx, w - 1), x1 = Math.Min(x0 + 1, w - 1);
                double wx = fx - x0;
                for (int c = 0; c < channels; c++)
                {
                    int o = c * h * w;
                    double v = (1 - wy) * ((1 - wx) * src[o + y0 * w + x0] + wx * src[o + y0 * w + x1])
                             + wy * ((1 - wx) * src[o + y1 * w + x0] + wx * src[o + y1 * w + x1]);
                    dst[c * nh * nw + y * nw + x] = (byte)Math.Clamp(Math.Round(v), 0, 255);
                }
            }
        }
        return dst;
    }

    /// Nearest-neighbour resize of an H×W label mask (labels must not be blended).
    public static byte[] ResizeNearest(ReadOnlySpan<byte> src, int h, int w, int nh, int nw)
    {
        if (h == nh && w == nw) return src.ToArray();
        var dst = new byte[nh * nw];
        for (int y = 0; y < nh; y++)
        {
            int sy = Math.Min((int)((y + 0.5) * h / nh), h - 1);
            for (int x = 0; x < nw; x++)
                dst[y * nw + x] = src[sy * w + Math.Min((int)((x + 0.5) * w / nw), w - 1)];
        }
        return dst;
    }

    internal static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".tga", ".gif"];

    internal static bool IsImage(string path) => Extensions.Contains(Path.GetExtension(path).ToLowerInvariant());
}
