using Lora.Core.Training;
using Onnx;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Lora.Core.Onnx;

/// The parameter-free ONNX operators, interpreted on torch tensors. Shape arithmetic (Shape, Gather,
/// Unsqueeze, Concat, ...) runs on small int64 CPU tensors as the graph computes it. Scalars passed
/// to native calls are held in `using` variables so no finaliser frees one during the call.
public static class OnnxOps
{
    /// The operators <see cref="Run"/> interprets (the weighted ones are in <see cref="OnnxLayer"/>).
    public static readonly IReadOnlySet<string> Supported = new HashSet<string>
    {
        "Identity", "Dropout", "Constant", "ConstantOfShape", "Cast", "Shape", "Gather", "Unsqueeze", "Squeeze",
        "Concat", "Reshape", "Flatten", "Transpose", "Expand", "Slice", "Split", "Where", "Equal", "Less", "Greater",
        "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Exp", "Log", "Neg", "Abs", "Reciprocal",
        "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Gelu", "Softmax",
        "MatMul", "Gemm", "ReduceMean", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    };

    /// Runs one node on its inputs (null for an omitted optional input); returns one tensor per output.
    public static Tensor[] Run(NodeProto n, Tensor?[] x, long opset)
    {
        Tensor X(int i) => i < x.Length && x[i] is { } t ? t : throw OnnxImportException.AtNode(n, opset, $"input {i} is missing");
        OnnxImportException Bad(string what) => OnnxImportException.AtNode(n, opset, what);
        switch (n.OpType)
        {
            case "Identity": return [X(0).alias()];
            case "Dropout": return [X(0).alias(), torch.ones_like(X(0), dtype: ScalarType.Bool)];
            case "Constant": return [ConstantValue(n, opset)];
            case "ConstantOfShape":
            {
                var shape = Longs(X(0));
                var value = n.Find("value") is { } a ? OnnxTensors.ToTorch(a.T, "ConstantOfShape") : torch.zeros(1, ScalarType.Float32);
                return [value.reshape(1).expand(shape.Length == 0 ? [1] : shape).reshape(shape).clone()];
            }
            case "Cast": return [X(0).to(OnnxTensors.ScalarTypeOf((int)n.Int("to", 1), $"node {n.Name}"))];
            case "Shape":
            {
                var dims = X(0).shape;
                var start = Axis(n.Int("start", 0), dims.Length, clamp: true);
                var end = n.Find("end") is null ? dims.Length : Axis(n.Int("end", 0), dims.Length, clamp: true);
                return [torch.tensor(dims[start..Math.Max(start, end)], ScalarType.Int64)];
            }
            case "Gather":
            {
                var data = X(0);
                var axis = Axis(n.Int("axis", 0), data.dim());
                using var idx0 = X(1).to(ScalarType.Int64, data.device);
                using var size = torch.tensor(data.shape[axis], ScalarType.Int64, data.device);
                using var idx = torch.where(idx0.lt(0L), idx0 + size, idx0);
                if (idx.dim() == 0) return [data.select(axis, idx.item<long>())];
                var picked = data.index_select(axis, idx.flatten());
                var shape = data.shape[..axis].Concat(idx.shape).Concat(data.shape[(axis + 1)..]).ToArray();
                return [picked.reshape(shape)];
            }
            case "Unsqueeze":
            {
                var axes = opset >= 13 ? Longs(X(1)) : n.Ints("axes") ?? throw Bad("has no axes");
                var rank = X(0).dim() + axes.Length;
                var y = X(0).alias();
                foreach (var a in axes.Select(a => Axis(a, rank)).Order()) y = y.unsqueeze(a);
                return [y];
            }
            case "Squeeze":
            {
                var axes = opset >= 13 ? (x.Length > 1 && x[1] is { } ax ? Longs(ax) : null) : n.Ints("axes");
                if (axes is null) return [X(0).squeeze()];
                var y = X(0).alias();
                foreach (var a in axes.Select(a => Axis(a, X(0).dim())).OrderDescending()) y = y.squeeze(a);
                return [y];
            }
            case "Concat":
            {
                var parts = x.Where(t => t is not null).Select(t => t!).ToList();
                var axis = Axis(n.Int("axis", 0), parts[0].dim());
                var device = parts.FirstOrDefault(p => p.device_type != DeviceType.CPU)?.device ?? parts[0].device;
                return [torch.cat(parts.Select(p => p.to(device)).ToList(), axis)];
            }
            case "Reshape":
            {
                var shape = Longs(X(1));
                var allowZero = n.Int("allowzero", 0) == 1;
                for (var i = 0; i < shape.Length; i++) if (shape[i] == 0 && !allowZero) shape[i] = X(0).shape[i];
                return [X(0).reshape(shape)];
            }
            case "Flatten":
            {
                var s = X(0).shape;
                var axis = Axis(n.Int("axis", 1), s.Length, clamp: true);
                return [X(0).reshape(s[..axis].Aggregate(1L, (a, b) => a * b), s[axis..].Aggregate(1L, (a, b) => a * b))];
            }
            case "Transpose":
            {
                var perm = n.Ints("perm") ?? Enumerable.Range(0, (int)X(0).dim()).Reverse().Select(i => (long)i).ToArray();
                return [X(0).permute(perm)];
            }
            case "Expand":
            {
                var shape = Longs(X(1));
                var s = X(0).shape;
                var rank = Math.Max(s.Length, shape.Length);
                var target = new long[rank];
                for (var i = 0; i < rank; i++)
                {
                    var a = i - (rank - s.Length) >= 0 ? s[i - (rank - s.Length)] : 1;
                    var b = i - (rank - shape.Length) >= 0 ? shape[i - (rank - shape.Length)] : 1;
                    target[i] = a == 1 ? b : a;
                }
                return [X(0).expand(target)];
            }
            case "Slice": return [Slice(n, x, opset, Bad)];
            case "Split":
            {
                var axis = Axis(n.Int("axis", 0), X(0).dim());
                long[] sizes = (opset >= 13 ? (x.Length > 1 && x[1] is { } s ? Longs(s) : null) : n.Ints("split"))
                    ?? Enumerable.Repeat(X(0).shape[axis] / n.Output.Count, n.Output.Count).ToArray();
                return X(0).split(sizes, axis);
            }
            case "Where": return [torch.where(X(0).to(ScalarType.Bool), X(1), Align(X(2), X(1)))];
            case "Equal": return [X(0).eq(Align(X(1), X(0)))];
            case "Less": return [X(0).lt(Align(X(1), X(0)))];
            case "Greater": return [X(0).gt(Align(X(1), X(0)))];
            case "Add": return [X(0).Plus(Align(X(1), X(0)))];
            case "Sub": return [X(0) - Align(X(1), X(0))];
            case "Mul": return [X(0) * Align(X(1), X(0))];
            // ONNX integer division truncates; torch's / would give floats
            case "Div": return [X(0).is_floating_point() ? X(0) / Align(X(1), X(0)) : X(0).div(Align(X(1), X(0)), RoundingMode.trunc)];
            case "Pow": return [X(0).pow(Align(X(1), X(0)))];
            case "Sqrt": return [X(0).sqrt()];
            case "Erf": return [X(0).erf()];
            case "Exp": return [X(0).exp()];
            case "Log": return [X(0).log()];
            case "Neg": return [X(0).neg()];
            case "Abs": return [X(0).abs()];
            case "Reciprocal": return [X(0).reciprocal()];
            case "Relu": return [F.relu(X(0))];
            case "LeakyRelu": return [F.leaky_relu(X(0), n.Float("alpha", 0.01f))];
            case "Sigmoid": return [X(0).sigmoid()];
            case "Tanh": return [X(0).tanh()];
            case "HardSigmoid": return [HardSigmoid(X(0), n.Float("alpha", 0.2f), n.Float("beta", 0.5f))];
            case "HardSwish": { using var h = HardSigmoid(X(0), 1f / 6, 0.5f); return [X(0) * h]; }
            case "Clip":
            {
                Tensor? lo, hi;
                if (opset >= 11) { lo = x.Length > 1 ? x[1] : null; hi = x.Length > 2 ? x[2] : null; }
                else
                {
                    lo = n.Find("min") is { } a ? torch.tensor(a.F) : null;
                    hi = n.Find("max") is { } b ? torch.tensor(b.F) : null;
                }
                var y = X(0);
                if (lo is not null) y = torch.maximum(y, lo.to(y.dtype, y.device));
                if (hi is not null) y = torch.minimum(y, hi.to(y.dtype, y.device));
                return [ReferenceEquals(y, X(0)) ? y.alias() : y];
            }
            case "Gelu":
            {
                if (n.Str("approximate", "none") != "tanh") return [F.gelu(X(0))];
                // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                using var c = torch.tensor(Math.Sqrt(2 / Math.PI), X(0).dtype, X(0).device);
                using var k = torch.tensor(0.044715, X(0).dtype, X(0).device);
                using var cube = X(0).pow(3);
                using var inner = (X(0) + cube * k) * c;
                using var t = inner.tanh();
                using var half = torch.tensor(0.5, X(0).dtype, X(0).device);
                return [X(0) * (t + 1) * half];
            }
            case "Softmax":
            {
                var rank = X(0).dim();
                if (opset >= 13) return [X(0).softmax(Axis(n.Int("axis", -1), rank))];
                // before opset 13: softmax over the flattened dimensions from axis on
                var axis = Axis(n.Int("axis", 1), rank);
                var s = X(0).shape;
                using var flat = X(0).reshape(s[..(int)axis].Aggregate(1L, (a, b) => a * b), -1);
                using var soft = flat.softmax(1);
                return [soft.reshape(s)];
            }
            case "MatMul": return [X(0).matmul(Align(X(1), X(0)))];
            case "Gemm":
            {
                var a = n.Int("transA", 0) == 1 ? X(0).t() : X(0);
                var b = n.Int("transB", 0) == 1 ? X(1).t() : X(1);
                using var alpha = torch.tensor(n.Float("alpha", 1f), a.dtype, a.device);
                var y = a.matmul(b) * alpha;
                if (x.Length > 2 && x[2] is { } c) { using var beta = torch.tensor(n.Float("beta", 1f), a.dtype, a.device); y = y + c.to(a.device) * beta; }
                return [y];
            }
            case "ReduceMean":
            {
                var keep = n.Int("keepdims", 1) == 1;
                var axes = opset >= 18 ? (x.Length > 1 && x[1] is { } ax ? Longs(ax) : null) : n.Ints("axes");
                if (axes is null || axes.Length == 0) axes = Enumerable.Range(0, (int)X(0).dim()).Select(i => (long)i).ToArray();
                return [X(0).mean(axes.Select(a => (long)Axis(a, X(0).dim())).ToArray(), keep)];
            }
            case "GlobalAveragePool": return [X(0).mean(Enumerable.Range(2, (int)X(0).dim() - 2).Select(i => (long)i).ToArray(), true)];
            case "GlobalMaxPool": return [X(0).amax(Enumerable.Range(2, (int)X(0).dim() - 2).Select(i => (long)i).ToArray(), true)];
            case "MaxPool": return [Pool(n, X(0), opset, max: true, Bad)];
            case "AveragePool": return [Pool(n, X(0), opset, max: false, Bad)];
            default: throw Bad("this operator is not supported");
        }
    }

    static Tensor HardSigmoid(Tensor x, float alpha, float beta)
    {
        using var a = torch.tensor(alpha, x.dtype, x.device);
        using var b = torch.tensor(beta, x.dtype, x.device);
        using var lin = x * a + b;
        return lin.clamp(0.0, 1.0);
    }

    /// The value of a Constant node (value, value_float(s), value_int(s)).
    public static Tensor ConstantValue(NodeProto n, long opset)
    {
        if (n.Find("value") is { } v) return OnnxTensors.ToTorch(v.T, $"node '{n.Name}'");
        if (n.Find("value_float") is { } f) return torch.tensor(f.F);
        if (n.Find("value_floats") is { } fs) return torch.tensor(fs.Floats.ToArray());
        if (n.Find("value_int") is { } i) return torch.tensor(i.I);
        if (n.Find("value_ints") is { } iss) return torch.tensor(iss.Ints.ToArray());
        throw OnnxImportException.AtNode(n, opset, "a Constant without a supported value attribute (sparse or string values are not supported)");
    }

    static Tensor Slice(NodeProto n, Tensor?[] x, long opset, Func<string, OnnxImportException> bad)
    {
        var data = x[0]!;
        long[] starts, ends; long[]? axes, steps;
        if (opset >= 10)
        {
            starts = Longs(x[1]!); ends = Longs(x[2]!);
            axes = x.Length > 3 && x[3] is { } a ? Longs(a) : null;
            steps = x.Length > 4 && x[4] is { } s ? Longs(s) : null;
        }
        else { starts = n.Ints("starts")!; ends = n.Ints("ends")!; axes = n.Ints("axes"); steps = null; }
        axes ??= Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
        var y = data.alias();
        for (var i = 0; i < starts.Length; i++)
        {
            var axis = Axis(axes[i], data.dim());
            var dim = data.shape[axis];
            var step = steps is null ? 1 : steps[i];
            if (step <= 0) throw bad("a Slice with a step that is not positive is not supported");
            long Clampd(long v) => Math.Clamp(v < 0 ? v + dim : v, 0, dim);
            var start = Clampd(starts[i]);
            var end = Clampd(ends[i]);
            var next = y.slice(axis, start, Math.Max(start, end), step);
            y.Dispose();
            y = next;
        }
        return y;
    }

    static Tensor Pool(NodeProto n, Tensor x, long opset, bool max, Func<string, OnnxImportException> bad)
    {
        if (x.dim() != 4) throw bad($"only 2-D pooling is supported (the input has rank {x.dim()})");
        if (n.Str("auto_pad", "NOTSET") is not ("NOTSET" or "VALID")) throw bad($"auto_pad {n.Str("auto_pad", "")} is not supported (export with explicit pads)");
        if (n.Output.Count > 1 && n.Output[1].Length > 0) throw bad("the indices output of MaxPool is not supported");
        var k = n.Ints("kernel_shape") ?? throw bad("has no kernel_shape");
        var strides = n.Ints("strides") ?? [1, 1];
        var pads = n.Ints("pads") ?? [0, 0, 0, 0];
        var dil = n.Ints("dilations") ?? [1, 1];
        var ceil = n.Int("ceil_mode", 0) == 1;
        var symmetric = pads[0] == pads[2] && pads[1] == pads[3] && pads[0] * 2 <= k[0] && pads[1] * 2 <= k[1];
        if (max)
        {
            if (symmetric) return F.max_pool2d(x, k, strides, [pads[0], pads[1]], dil, ceil);
            // asymmetric pads (e.g. CNTK's [1, 1, 0, 0]): pad with -inf, pool without padding
            using var padded = F.pad(x, [pads[1], pads[3], pads[0], pads[2]], PaddingModes.Constant, double.NegativeInfinity);
            return F.max_pool2d(padded, k, strides, [0, 0], dil, ceil);
        }
        if (dil.Any(d => d != 1)) throw bad("a dilated AveragePool is not supported");
        var countPad = n.Int("count_include_pad", 0) == 1;
        if (symmetric) return F.avg_pool2d(x, k, strides, [pads[0], pads[1]], ceil, countPad);
        if (!countPad) throw bad("an AveragePool with asymmetric pads that excludes the padding from the count is not supported");
        using var zpadded = F.pad(x, [pads[1], pads[3], pads[0], pads[2]]);
        return F.avg_pool2d(zpadded, k, strides, [0, 0], ceil, true);
    }

    /// A small int64 tensor (a shape, axes, indices) as longs.
    public static long[] Longs(Tensor t)
    {
        using var c = t.to(ScalarType.Int64).cpu().flatten();
        return c.data<long>().ToArray();
    }

    /// The other operand on this one's device (shape constants live on the CPU).
    static Tensor Align(Tensor other, Tensor like) =>
        other.device_type == like.device_type && other.device_index == like.device_index ? other : other.to(like.device);

    static int Axis(long axis, long rank, bool clamp = false)
    {
        var a = axis < 0 ? axis + rank : axis;
        return (int)(clamp ? Math.Clamp(a, 0, rank) : a);
    }
}
