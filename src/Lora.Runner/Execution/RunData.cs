using Lora.Core.Data;
using Lora.Dsl;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using Task = Lora.Dsl.Task;

namespace Lora.Runner;

/// The data of one run, materialised from its <see cref="DatasetView"/>: a classification pair of
/// image sets or a segmentation pair, deterministic from the view's seed.
public sealed record RunData(ImageDataset? Train, ImageDataset? Validation, SegmentationDataset? SegTrain, SegmentationDataset? SegValidation)
{
    public bool IsSegmentation => SegTrain is not null;
    public int Channels => Train?.Channels ?? SegTrain!.Channels;
    public int Height => Train?.Height ?? SegTrain!.Height;
    /// Classes the model must output: the class count, or 1 for a binary mask (one logit map).
    public int OutputClasses => Train?.NumClasses ?? (SegTrain!.IsBinary ? 1 : SegTrain.NumClasses);
    public int TrainCount => Train?.Count ?? SegTrain!.Count;

    /// Fashion-MNIST is read once per process; every view of it is cut from these copies.
    static readonly Dictionary<(string?, bool), ImageDataset> fashionCache = new();

    /// <param name="imageSize">the spec's image_size (null: the model's own)</param>
    /// <param name="model">the model's fixed input size and channels, where it has them: an image folder is read at them</param>
    public static RunData Load(DatasetView view, Task task, int? imageSize, (int? Size, int? Channels) model = default)
    {
        RunData Classification(ImageDataset trainSet, ImageDataset valSet) =>
            new(Limit(trainSet, view.LimitTrain, view.Seed), Limit(valSet, view.LimitVal, view.Seed + 1), null, null);
        void NoSegmentation()
        {
            if (task.IsSegmentation)
                throw new InvalidDataException($"a segmentation run needs a segmentation data set (composed or segmentation pairs), not {view.Source}");
        }
        return view.Source.Match(
            fashionMnist: path =>
            {
                NoSegmentation();
                var what = FashionName(path);
                return Classification(View(Fashion(path, true), view, what), View(Fashion(path, false), view, what));
            },
            cifar: root =>
            {
                NoSegmentation();
                var what = $"CIFAR-{(Cifar.IsCifar100(root) ? 100 : 10)} data set at '{root}'";
                return Classification(View(Cifar.Load(root, true), view, what), View(Cifar.Load(root, false), view, what));
            },
            imageFolder: root =>
            {
                NoSegmentation();
                // decoded straight to what the model takes (a 1-channel model reads grey images)
                var all = View(ImageFolder.Load(root, imageSize ?? model.Size ?? 224, model.Channels == 1 ? 1 : 3), view, $"image folder '{root}'");
                var (trainSet, valSet) = all.Split(view.ValFraction, view.Seed);
                return Classification(trainSet, valSet);
            },
            segmentationPairs: path =>
            {
                var all = SegmentationFolder.Load(path, imageSize ?? 64);
                var (tr, va) = all.Split(view.ValFraction, view.Seed);
                return new RunData(null, null, Limit(tr, view.LimitTrain, view.Seed), Limit(va, view.LimitVal, view.Seed));
            },
            composed: c =>
            {
                var path = OptionModule.ToObj(c.Path);
                var what = FashionName(path);
                var (train, test) = (View(Fashion(path, true), view, what), View(Fashion(path, false), view, what));
                var opts = new ComposeOptions(Canvas: c.Canvas, MinObjects: 1, MaxObjects: Math.Max(1, c.Objects));
                var segTrain = Lora.Core.Data.ComposedSegmentation.Create(train, Opt(view.LimitTrain) ?? 1000, view.Seed, opts);
                var segVal = Lora.Core.Data.ComposedSegmentation.Create(test, Opt(view.LimitVal) ?? 200, view.Seed + 1, opts);
                return new RunData(null, null, segTrain, segVal);
            });
    }

    static ImageDataset Fashion(string? path, bool train)
    {
        lock (fashionCache)
        {
            if (!fashionCache.TryGetValue((path, train), out var set))
                fashionCache[(path, train)] = set = FashionMnist.Load(path, train);
            return set;
        }
    }

    static string FashionName(string? path) => $"Fashion-MNIST at '{path ?? DataDefaults.fashionMnist}'";

    /// Class subset (relabelled 0..k-1 in the order given), then k shots per class. Validation checks
    /// class indices where the class count is known from the spec alone; an image folder's count is
    /// known only here, so a class beyond it is reported here, with the folder and the valid range.
    static ImageDataset View(ImageDataset set, DatasetView view, string what)
    {
        if (Opt(view.Classes) is { } classes)
        {
            var wanted = classes.ToArray();
            foreach (var c in wanted)
                if (c < 0 || c >= set.NumClasses)
                    throw new InvalidDataException(
                        $"{what} has {set.NumClasses} classes ({ClassRange(set)}): class {c} in classes [{string.Join(", ", wanted)}] " +
                        $"is outside them; choose classes in 0-{set.NumClasses - 1}.");
            set = set.SelectClasses(wanted);
        }
        if (Opt(view.ShotsPerClass) is int k)
        {
            try { set = set.KShot(k, view.Seed); }
            catch (ArgumentException e) { throw new InvalidDataException($"{what}: shots {k}: {e.Message}", e); }
        }
        return set;
    }

    /// "0-2: cat, dog, fox", with at most ten names.
    static string ClassRange(ImageDataset set)
    {
        var names = set.Classes.Take(10).ToList();
        var more = set.NumClasses > names.Count ? ", ..." : "";
        return $"0-{set.NumClasses - 1}: {string.Join(", ", names)}{more}";
    }

    /// A seeded sample of at most n items (the first n of a permutation), so that a limit keeps
    /// every class represented.
    static ImageDataset Limit(ImageDataset set, FSharpOption<int>? n, int seed) =>
        Opt(n) is int k && k < set.Count ? set.Subset(Seeded.Permutation(set.Count, seed).Take(k).ToArray()) : set;

    static SegmentationDataset Limit(SegmentationDataset set, FSharpOption<int>? n, int seed) =>
        Opt(n) is int k && k < set.Count ? set.Subset(Seeded.Permutation(set.Count, seed).Take(k).ToArray()) : set;

    static int? Opt(FSharpOption<int>? o) => o is null ? null : o.Value;
    static FSharpList<int>? Opt(FSharpOption<FSharpList<int>>? o) => o?.Value;
}
