using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Data;

/// What is done to a batch on its way to the model, in this order: bytes → [0,1] floats, resize
/// (bilinear; masks nearest), random crop after zero padding (classification only), random
/// horizontal flip, grey → 3 channels, normalise with mean/std per channel.
/// <param name="Size">resize to Size×Size, or keep the stored size</param>
/// <param name="CropPadding">pad by this many pixels and crop back at a random offset (0: off)</param>
/// <param name="HorizontalFlip">flip each image with probability 1/2</param>
/// <param name="GreyToRgb">repeat a single channel three times</param>
/// <param name="Mean">per-channel mean to subtract (after the grey → RGB step)</param>
/// <param name="Std">per-channel standard deviation to divide by</param>
/// <param name="RandomResizedCropScale">timm's RandomResizedCrop (classification, after the resize):
/// a crop of area fraction in [this, 1] and aspect ratio in [3/4, 4/3], resized back (0: off)</param>
/// <param name="RgbToGrey">average three channels into one (RGB data for a 1-channel model)</param>
public sealed record Transforms(
    int? Size = null, int CropPadding = 0, bool HorizontalFlip = false, bool GreyToRgb = false,
    float[]? Mean = null, float[]? Std = null, double RandomResizedCropScale = 0, bool RgbToGrey = false)
{
    public static readonly Transforms None = new();

    /// ImageNet statistics (timm's IMAGENET_DEFAULT_MEAN / STD).
    public static readonly float[] ImageNetMean = [0.485f, 0.456f, 0.406f];
    public static readonly float[] ImageNetStd = [0.229f, 0.224f, 0.225f];

    /// The same transforms without the random parts (for evaluation).
    public Transforms ForEvaluation() => this with { CropPadding = 0, HorizontalFlip = false, RandomResizedCropScale = 0 };

    public bool IsRandom => CropPadding > 0 || HorizontalFlip || RandomResizedCropScale > 0;

    /// Applies the deterministic and random steps to float images [B,C,H,W] in [0,1].
    public Tensor Apply(Tensor x, Random rng)
    {
        if (Size is int s && (x.shape[2] != s || x.shape[3] != s)) x = Resize(x, s, s);
        if (RandomResizedCropScale > 0) x = RandomResizedCrop(x, RandomResizedCropScale, rng);
        if (CropPadding > 0) x = RandomCrop(x, CropPadding, rng);
        if (HorizontalFlip) x = Flip(x, FlipMask((int)x.shape[0], rng));
        if (GreyToRgb && x.shape[1] == 1) x = x.expand(-1, 3, -1, -1).contiguous();
        if (RgbToGrey && x.shape[1] == 3) x = x.mean([1], keepdim: true);
        if (Mean is not null || Std is not null) x = Normalize(x, Mean ?? [0f], Std ?? [1f]);
        return x;
    }

    public static Tensor Resize(Tensor x, int height, int width) =>
        nn.functional.interpolate(x, [height, width], mode: InterpolationMode.Bilinear, align_corners: false);

    public static Tensor ResizeMask(Tensor mask, int height, int width) =>
        nn.functional.interpolate(mask.unsqueeze(1).to(ScalarType.Float32), [height, width], mode: InterpolationMode.Nearest)
            .squeeze(1).to(mask.dtype);

    public static Tensor RandomCrop(Tensor x, int padding, Random rng)
    {
        long b = x.shape[0], h = x.shape[2], w = x.shape[3];
        using var padded = nn.functional.pad(x, [padding, padding, padding, padding]);
        var parts = new Tensor[b];
        for (int i = 0; i < b; i++)
        {
            int dy = rng.Next(2 * padding + 1), dx = rng.Next(2 * padding + 1);
            parts[i] = padded[i, .., dy..(int)(dy + h), dx..(int)(dx + w)];
        }
        var r = stack(parts);
        foreach (var p in parts) p.Dispose();
        return r;
    }

    /// The crop box (top, left, height, width) of timm's RandomResizedCrop.get_params: ten tries at
    /// an area in [minScale, 1] of the image and a log-uniform ratio in [3/4, 4/3]; then the whole image.
    public static (int Top, int Left, int Height, int Width) RandomResizedBox(int height, int width, double minScale, Random rng)
    {
        double area = (double)height * width;
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double target = area * (minScale + (1 - minScale) * rng.NextDouble());
            double ratio = Math.Exp(Math.Log(3.0 / 4) + (Math.Log(4.0 / 3) - Math.Log(3.0 / 4)) * rng.NextDouble());
            int w = (int)Math.Round(Math.Sqrt(target * ratio)), h = (int)Math.Round(Math.Sqrt(target / ratio));
            if (w > 0 && h > 0 && w <= width && h <= height)
                return (rng.Next(height - h + 1), rng.Next(width - w + 1), h, w);
        }
        return (0, 0, height, width);
    }

    /// Each image of [B,C,H,W] cropped at its own random box and resized back to H×W (bilinear).
    public static Tensor RandomResizedCrop(Tensor x, double minScale, Random rng)
    {
        int b = (int)x.shape[0], h = (int)x.shape[2], w = (int)x.shape[3];
        using var scope = NewDisposeScope();
        var parts = new Tensor[b];
        for (int i = 0; i < b; i++)
        {
            var (top, left, ch, cw) = RandomResizedBox(h, w, minScale, rng);
            var crop = x[i..(i + 1), .., top..(top + ch), left..(left + cw)];
            parts[i] = ch == h && cw == w ? crop : Resize(crop, h, w);
        }
        return cat(parts, 0).MoveToOuterDisposeScope();
    }

    public static bool[] FlipMask(int n, Random rng) => Enumerable.Range(0, n).Select(_ => rng.Next(2) == 1).ToArray();

    /// Flips the images whose entry in <paramref name="flip"/> is true along the width.
    public static Tensor Flip(Tensor x, bool[] flip)
    {
        if (!flip.Any(f => f)) return x;
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[0] = flip.Length;
        using var m = tensor(flip, device: x.device).reshape(shape);
        return where(m, x.flip(x.dim() - 1), x);
    }

    public static Tensor Normalize(Tensor x, float[] mean, float[] std)
    {
        using var m = tensor(mean, device: x.device).reshape(1, -1, 1, 1);
        using var s = tensor(std, device: x.device).reshape(1, -1, 1, 1);
        return (x - m) / s;
    }
}
