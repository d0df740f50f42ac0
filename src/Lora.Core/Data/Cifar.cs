namespace Lora.Core.Data;

/// CIFAR-10 / CIFAR-100 binary batches: each record is the label byte(s) then 3072 bytes of a
/// 32×32 RGB image (channel-first). CIFAR-10 has one label byte; CIFAR-100 two (coarse, fine).
public static class Cifar
{
    const int ImageBytes = 3 * 32 * 32;

    /// Reads record files; <paramref name="labelBytes"/> is 1 (CIFAR-10) or 2 (CIFAR-100), and
    /// <paramref name="fine"/> picks CIFAR-100's fine label (otherwise the coarse one).
    public static ImageDataset Read(IReadOnlyList<string> files, int labelBytes, bool fine, IReadOnlyList<string> classes)
    {
        if (labelBytes is not (1 or 2)) throw new ArgumentOutOfRangeException(nameof(labelBytes), "CIFAR records have 1 or 2 label bytes.");
        if (files.Count == 0) throw new ArgumentException("no CIFAR batch files given.");
        int rec = labelBytes + ImageBytes;
        var px = new List<byte[]>();
        var labels = new List<int>();
        foreach (var f in files)
        {
            if (!File.Exists(f)) throw new FileNotFoundException($"CIFAR batch file not found: {f}", f);
            var len = Lora.Core.IO.InputFile.Check(f, 2 * Lora.Core.IO.InputFile.GiB, "CIFAR batch file");
            if (len == 0 || len % rec != 0)
                throw new InvalidDataException(
                    $"{f}: {len} bytes is not a whole number of {rec}-byte CIFAR records ({labelBytes} label byte(s) + 3072 pixels); " +
                    "the file is truncated, or it is not a CIFAR-" + (labelBytes == 1 ? "10" : "100") + " binary batch.");
            var raw = File.ReadAllBytes(f);
            int n = (int)(len / rec);
            var img = new byte[(long)n * ImageBytes];
            for (int i = 0; i < n; i++)
            {
                int l = raw[i * rec + (labelBytes == 2 && fine ? 1 : 0)];
                if (l >= classes.Count)
                    throw new InvalidDataException($"{f}: record {i} has label {l}, outside the {classes.Count} classes (wrong label-byte count?).");
                labels.Add(l);
                Buffer.BlockCopy(raw, i * rec + labelBytes, img, i * ImageBytes, ImageBytes);
            }
            px.Add(img);
        }
        var all = new byte[px.Sum(a => (long)a.Length)];
        long o = 0;
        foreach (var a in px) { Buffer.BlockCopy(a, 0, all, (int)o, a.Length); o += a.Length; }
        return new ImageDataset(all, labels.ToArray(), 3, 32, 32, classes);
    }

    public static readonly IReadOnlyList<string> Cifar10Classes =
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    /// CIFAR-10 from a folder with data_batch_1..5.bin and test_batch.bin (or its
    /// cifar-10-batches-bin subfolder); class names from batches.meta.txt when present.
    public static ImageDataset LoadCifar10(string root, bool train = true)
    {
        var dir = Resolve(root, "cifar-10-batches-bin", train ? "data_batch_1.bin" : "test_batch.bin");
        var files = train
            ? Enumerable.Range(1, 5).Select(i => Path.Combine(dir, $"data_batch_{i}.bin")).Where(File.Exists).ToArray()
            : [Path.Combine(dir, "test_batch.bin")];
        var meta = Path.Combine(dir, "batches.meta.txt");
        var classes = File.Exists(meta) ? ReadNames(meta) : Cifar10Classes;
        return Read(files, 1, false, classes.Count >= 10 ? classes : Cifar10Classes);
    }

    /// CIFAR-100 from a folder with train.bin and test.bin (or its cifar-100-binary subfolder).
    public static ImageDataset LoadCifar100(string root, bool train = true, bool fine = true)
    {
        var file = train ? "train.bin" : "test.bin";
        var dir = Resolve(root, "cifar-100-binary", file);
        var meta = Path.Combine(dir, fine ? "fine_label_names.txt" : "coarse_label_names.txt");
        int n = fine ? 100 : 20;
        var classes = File.Exists(meta) ? ReadNames(meta) : Enumerable.Range(0, n).Select(i => i.ToString()).ToArray();
        if (classes.Count != n) classes = Enumerable.Range(0, n).Select(i => i.ToString()).ToArray();
        return Read([Path.Combine(dir, file)], 2, fine, classes);
    }

    /// Whether <paramref name="root"/> holds CIFAR-100 (train.bin, there or in cifar-100-binary/)
    /// rather than CIFAR-10's data batches.
    public static bool IsCifar100(string root) =>
        File.Exists(Path.Combine(root, "train.bin")) || File.Exists(Path.Combine(root, "cifar-100-binary", "train.bin"));

    /// CIFAR-100 (fine labels) or CIFAR-10, whichever <paramref name="root"/> holds.
    public static ImageDataset Load(string root, bool train) => IsCifar100(root) ? LoadCifar100(root, train) : LoadCifar10(root, train);

    static string Resolve(string root, string sub, string probe)
    {
        if (File.Exists(Path.Combine(root, probe))) return root;
        var s = Path.Combine(root, sub);
        if (File.Exists(Path.Combine(s, probe))) return s;
        throw new FileNotFoundException($"no CIFAR batch {probe} in {root} or {s}; pass the folder that holds the binary batches.");
    }

    static IReadOnlyList<string> ReadNames(string path) =>
        Lora.Core.IO.InputFile.ReadAllLines(path, Lora.Core.IO.InputFile.MaxTextBytes, "CIFAR class names").Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
}
