namespace Lora.Core.Data;

/// Fashion-MNIST (and MNIST-layout folders): 28×28 grey images, 10 classes, IDX files.
public static class FashionMnist
{
    /// Where the Debian package dataset-fashion-mnist installs the files.
    public const string DefaultRoot = "/usr/share/datasets/fashion-mnist";

    public static readonly IReadOnlyList<string> ClassNames =
    [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ];

    public static bool IsInstalled(string root = DefaultRoot) =>
        FindFile(root, "train-images-idx3-ubyte") is not null;

    /// Loads the training (60,000) or test (10,000) split.
    public static ImageDataset Load(string? root = null, bool train = true)
    {
        root ??= DefaultRoot;
        if (!Directory.Exists(root))
            throw new DirectoryNotFoundException(
                $"Fashion-MNIST not found: the folder {root} does not exist. Install it with " +
                "`apt-get install dataset-fashion-mnist` or pass the folder that holds the IDX files.");
        var prefix = train ? "train" : "t10k";
        var imgPath = FindFile(root, $"{prefix}-images-idx3-ubyte") ?? throw Missing(root, $"{prefix}-images-idx3-ubyte[.gz]");
        var lblPath = FindFile(root, $"{prefix}-labels-idx1-ubyte") ?? throw Missing(root, $"{prefix}-labels-idx1-ubyte[.gz]");
        var images = IdxReader.Read(imgPath);
        var labels = IdxReader.Read(lblPath);
        if (images.Dims.Length != 3)
            throw new InvalidDataException($"{imgPath}: expected 3 dimensions (N, H, W), found {images.Dims.Length}.");
        if (labels.Dims.Length != 1)
            throw new InvalidDataException($"{lblPath}: expected 1 dimension (N), found {labels.Dims.Length}.");
        if (images.Count != labels.Count)
            throw new InvalidDataException($"{imgPath} holds {images.Count} images but {lblPath} holds {labels.Count} labels.");
        var lb = new int[labels.Count];
        for (int i = 0; i < lb.Length; i++)
        {
            lb[i] = labels.Data[i];
            if (lb[i] >= ClassNames.Count) throw new InvalidDataException($"{lblPath}: label {lb[i]} at item {i} is outside 0..9.");
        }
        return new ImageDataset(images.Data, lb, 1, images.Dims[1], images.Dims[2], ClassNames);
    }

    static string? FindFile(string root, string stem)
    {
        foreach (var name in new[] { stem + ".gz", stem, stem.Replace("-idx", ".idx") + ".gz", stem.Replace("-idx", ".idx") })
        {
            var p = Path.Combine(root, name);
            if (File.Exists(p)) return p;
        }
        return null;
    }

    static FileNotFoundException Missing(string root, string what) =>
        new($"Fashion-MNIST not found: {root} has no {what}. Install it with `apt-get install dataset-fashion-mnist` " +
            "or pass the folder that holds the IDX files.");
}
