using Lora.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Lora.Core.Training;

/// One label of a prediction with its softmax probability.
public sealed record Prediction(int Index, string Label, double Probability);

/// The classification pipeline: image files → tensors at the model's input size → top-k labels.
public static class Predictor
{
    static Predictor() => NativeWorkarounds.Apply();

    /// The k most probable labels per image (model in eval mode, no gradients). Labels default to
    /// the class indices.
    public static IReadOnlyList<IReadOnlyList<Prediction>> TopK(nn.Module<Tensor, Tensor> model, Tensor images, int k, IReadOnlyList<string>? labels = null)
    {
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), "k must be at least 1.");
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var logits = model.forward(images).to(ScalarType.Float32).cpu();
            long classes = logits.shape[1];
            if (labels is not null && labels.Count != classes)
                throw new ArgumentException($"{labels.Count} labels given but the model predicts {classes} classes.");
            var finite = logits.isfinite().all(1).data<bool>().ToArray();
            var broken = Array.IndexOf(finite, false);
            if (broken >= 0)
                throw new InvalidDataException($"the model's scores for image {broken + 1} are NaN or infinite: its weights or adapter are broken (no prediction reported)");
            var (values, indexes) = logits.softmax(1).topk((int)Math.Min(k, classes), dim: 1);
            var p = values.data<float>().ToArray();
            var ix = indexes.data<long>().ToArray();
            int kk = (int)values.shape[1];
            var result = new List<IReadOnlyList<Prediction>>();
            for (int i = 0; i < values.shape[0]; i++)
                result.Add(Enumerable.Range(0, kk).Select(j =>
                {
                    int c = (int)ix[i * kk + j];
                    return new Prediction(c, labels?[c] ?? c.ToString(), p[i * kk + j]);
                }).ToArray());
            return result;
        }
        finally { model.train(wasTraining); }
    }

    /// Loads image files (PNG, JPEG, ...) as float [N,C,size,size] in [0,1], then normalised when
    /// mean/std are given (use the statistics the model was trained with).
    public static Tensor LoadImages(IEnumerable<string> paths, int size, int channels = 3, float[]? mean = null, float[]? std = null)
    {
        var files = paths.ToArray();
        if (files.Length == 0) throw new ArgumentException("no image files given.");
        int n = channels * size * size;
        var buf = new byte[files.Length * n];
        for (int i = 0; i < files.Length; i++)
        {
            if (!File.Exists(files[i])) throw new FileNotFoundException($"image not found: {files[i]}", files[i]);
            var (px, h, w) = ImageFile.Read(files[i], channels);
            ImageFile.ResizeBilinear(px, channels, h, w, size, size).CopyTo(buf, i * n);
        }
        using var scope = NewDisposeScope();
        using Scalar byteMax = 255f;
        var x = tensor(buf, [files.Length, channels, size, size], ScalarType.Byte).to(ScalarType.Float32).div_(byteMax);
        if (mean is not null || std is not null) x = Transforms.Normalize(x, mean ?? [0f], std ?? [1f]);
        return x.MoveToOuterDisposeScope();
    }

    /// Labels from a text file, one per line (blank lines ignored).
    public static IReadOnlyList<string> ReadLabels(string path) =>
        File.Exists(path)
            ? Lora.Core.IO.InputFile.ReadAllLines(path, Lora.Core.IO.InputFile.MaxTextBytes, "labels file").Select(l => l.Trim()).Where(l => l.Length > 0).ToArray()
            : throw new FileNotFoundException($"labels file not found: {path}", path);
}
