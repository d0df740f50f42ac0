using Onnx;

namespace Lora.Core.Onnx;

/// torchvision's module paths (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, ...) for a
/// BasicBlock ResNet graph whose exporter kept no names (ML.NET's CNTK ResNet-18: Convolution249,
/// BatchNormalization251), read off the structure: each Add closes a block; the branch with two
/// convolutions is the main path, a convolution on the other branch is the downsample, and a block
/// with a downsample starts a new stage.
public static class ResNetNames
{
    /// Derived path → torchvision path; empty when the graph is not a BasicBlock ResNet.
    public static IReadOnlyDictionary<string, string> For(OnnxGraph g)
    {
        var nodes = g.Graph.Node;
        var producer = new Dictionary<string, int>();
        for (var i = 0; i < nodes.Count; i++) foreach (var o in nodes[i].Output) producer[o] = i;
        int? From(string v, string op) => producer.TryGetValue(v, out var i) && nodes[i].OpType == op ? i : null;
        string Derived(int i) => nodes[i].OpType == "Conv"
            ? OnnxNames.Candidate(nodes[i], i, [nodes[i].In(1), nodes[i].In(2)])
            : OnnxNames.Candidate(nodes[i], i, [nodes[i].In(1), nodes[i].In(2), nodes[i].In(3)]);

        var map = new Dictionary<string, string>();
        var firstConv = Enumerable.Range(0, nodes.Count).FirstOrDefault(i => nodes[i].OpType == "Conv", -1);
        if (firstConv < 0) return map;
        map[Derived(firstConv)] = "conv1";
        var stemBn = Enumerable.Range(firstConv + 1, nodes.Count - firstConv - 1).FirstOrDefault(i => nodes[i].OpType == "BatchNormalization" && nodes[i].Input[0] == nodes[firstConv].Output[0], -1);
        if (stemBn >= 0) map[Derived(stemBn)] = "bn1";

        // (conv1, bn1, conv2, bn2) of a main path ending in value v: BN ← Conv ← Relu ← BN ← Conv
        (int, int, int, int)? Main(string v)
        {
            if (From(v, "BatchNormalization") is not { } bn2 || From(nodes[bn2].Input[0], "Conv") is not { } conv2
                || From(nodes[conv2].Input[0], "Relu") is not { } relu || From(nodes[relu].Input[0], "BatchNormalization") is not { } bn1
                || From(nodes[bn1].Input[0], "Conv") is not { } conv1) return null;
            return (conv1, bn1, conv2, bn2);
        }

        int stage = 1, block = -1, b = 0;
        foreach (var add in Enumerable.Range(0, nodes.Count).Where(i => nodes[i].OpType == "Add"))
        {
            var a = nodes[add];
            if (a.Input.Count != 2) return new Dictionary<string, string>();
            var which = Main(a.Input[0]) is not null ? 0 : Main(a.Input[1]) is not null ? 1 : -1;
            if (which < 0) return new Dictionary<string, string>();
            var (c1, n1, c2, n2) = Main(a.Input[which])!.Value;
            var shortcut = a.Input[1 - which];
            int? downBn = From(shortcut, "BatchNormalization");
            int? downConv = downBn is { } db ? From(nodes[db].Input[0], "Conv") : null;
            if (downConv is not null && b > 0) { stage++; block = 0; } else block++;
            var p = $"layer{stage}.{block}";
            map[Derived(c1)] = p + ".conv1"; map[Derived(n1)] = p + ".bn1";
            map[Derived(c2)] = p + ".conv2"; map[Derived(n2)] = p + ".bn2";
            if (downConv is { } dc) { map[Derived(dc)] = p + ".downsample.0"; map[Derived(downBn!.Value)] = p + ".downsample.1"; }
            b++;
        }
        return map;
    }
}
