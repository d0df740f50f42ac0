using Google.Protobuf;
using Lora.Core.IO;
using Lora.Core.Models;
using Lora.Core.Tuning;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Lora.Core.Onnx;

/// Writes a plain (merged) zoo model of the ViT, ConvNeXt or ResNet family as an ONNX file (opset
/// 17): its weights as initializers under their timm state-dict keys, nodes emitted per module type
/// following each family's eval forward. Input `input` [N, C, H, W] (N symbolic), output `output`.
/// Tuned models are exported after merge-and-unload, except a ViT's non-mergeable methods (bottleneck
/// adapters, AdaptFormer, VPT, Convpass), whose ops are written; any other layer that cannot be
/// merged or a module this exporter does not know is an error naming the module, and nothing is written.
public static class ZooExport
{
    /// Whether <see cref="Export"/> takes this model (see <see cref="Problem"/> for why not).
    public static bool CanExport(nn.Module model) => Problem(model) is null;

    /// Why the model cannot be exported, naming the module; null when it can.
    public static string? Problem(nn.Module model)
    {
        if (model is not (VisionTransformer or ConvNeXt or ResNet))
        {
            // Convpass tunes SAM's and TinyViT's encoders too: say that only the ViT's bypasses export
            var convpass = ModuleTree.Descendants(model).Any(d => d.Module is ConvpassModule)
                ? " (Convpass bypasses export on the ViT family only; SAM and TinyViT models are not exported, with Convpass or without)" : "";
            return $"ONNX export of zoo models covers the ViT, ConvNeXt and ResNet families; this is a {model.GetType().Name}{convpass}";
        }
        foreach (var (path, m) in ModuleTree.Descendants(model))
        {
            var what = m switch
            {
                // the non-mergeable ViT methods export with their own ops (in the block / token stream)
                BottleneckAdapter or AdaptFormerModule or VisualPrompts or ConvpassModule or GELU when model is VisionTransformer => null,
                // left in place beside those methods (merge-and-unload refuses them): its active copy is written
                ModulesToSaveWrapper { ActiveAdapter: not null, AdaptersDisabled: false } => null,
                IAdapterModule a => $"a {a.Group} adapter, which cannot be merged into the weights: ONNX export takes merged models, or a ViT's bottleneck adapters, AdaptFormer, VPT prompts and Convpass bypasses",
                TunerLayer t => $"a {t.GetType().Name} (a tuning layer): merge it into the weights first (merge-and-unload), then export",
                ModulesToSaveWrapper => "a modules-to-save wrapper: merge-and-unload the tuned model first, then export",
                Conv2d or Linear or LayerNorm or LayerNorm2d or BatchNorm2d or Identity or Sequential or ModuleList<ConvNeXtStage> or ModuleList<ConvNeXtBlock> or ModuleList<Block>
                    or VisionTransformer or ConvNeXt or ResNet or PatchEmbed or Block or Attention or Mlp or ConvNeXtStage or ConvNeXtBlock or NormClassifierHead or BasicBlock or Bottleneck => null,
                _ => $"a {m.GetType().Name}, a module ONNX export does not know",
            };
            if (what is not null) return $"'{path}' is {what}";
        }
        return null;
    }

    /// The input shape a command exports with when none is given: [1, in_chans, img_size, img_size]
    /// for a ViT (its positional embedding fixes the size), [1, in_chans, 224, 224] for ConvNeXt and
    /// ResNet (timm's default input size; their pooling takes other sizes in PyTorch, but the file is fixed).
    /// Read from the model's card.
    public static long[] DefaultInputShape(nn.Module model)
    {
        if (model is not (VisionTransformer or ConvNeXt or ResNet)) throw new NotSupportedException($"Cannot export to ONNX: {Problem(model)}.");
        var card = Zoo.Card(model);
        var size = card.InputSize ?? 224L;
        return new[] { 1, card.InChans, size, size };
    }

    /// Writes the model's eval-mode forward for inputs shaped inputShape ([N, C, H, W]; N stays
    /// symbolic in the file) to path, atomically. The model is left as it was (mode and weights).
    public static void Export(nn.Module model, long[] inputShape, string path)
    {
        if (Problem(model) is { } why) throw new NotSupportedException($"Cannot export to ONNX: {why}.");
        if (inputShape.Length != 4 || inputShape.Any(d => d <= 0))
            throw new ArgumentException($"ONNX export needs an input shape [N, C, H, W] of positive sizes, got [{string.Join(", ", inputShape)}].");
        var outputShape = CheckedForward((nn.Module<Tensor, Tensor>)model, inputShape);
        var g = new ExportGraph();
        var dims = inputShape.Select((d, i) => i == 0 ? (long?)null : d).ToList();
        g.Input("input", dims);
        string y;
        using (no_grad())
            y = new Emitter(g).Model(model, "input");
        g.Output(y, "output", outputShape.Select((d, i) => i == 0 ? (long?)null : d));
        var onnx = g.Model($"{model.GetType().Name} exported by Lora (merged eval-mode forward)");
        AtomicFile.Write(path, fs => onnx.WriteTo(fs));
    }

    /// Runs the eval forward once on zeros (the model's own shape checks speak first) and gives the
    /// output shape; restores every module's training flag.
    static long[] CheckedForward(nn.Module<Tensor, Tensor> model, long[] inputShape)
    {
        var modes = new[] { (nn.Module)model }.Concat(model.modules()).Select(m => (m, m.training)).ToList();
        var p = model.parameters().First();
        try
        {
            model.eval();
            using var _ = no_grad();
            using var x = zeros(inputShape, p.dtype, p.device);
            using var y = model.forward(x);
            return y.shape;
        }
        finally
        {
            foreach (var (m, training) in modes) m.train(training);
        }
    }

    /// The nodes of each module type, as that module's forward computes them.
    sealed class Emitter
    {
        readonly ExportGraph g;
        public Emitter(ExportGraph g) => this.g = g;

        static string Join(string path, string name) => path.Length == 0 ? name : path + "." + name;

        static nn.Module Child(nn.Module m, string name, string path) =>
            m.named_children().FirstOrDefault(c => c.name == name).module
            ?? throw new InvalidOperationException($"'{path}' ({m.GetType().Name}) has no child '{name}'");

        static Parameter Param(nn.Module m, string name, string path) =>
            m.named_parameters(recurse: false).FirstOrDefault(p => p.name == name).parameter
            ?? throw new InvalidOperationException($"'{path}' ({m.GetType().Name}) has no parameter '{name}'");

        string Sub(nn.Module parent, string path, string name, string x) => Emit(Join(path, name), Child(parent, name, path), x);

        public string Model(nn.Module m, string x) => Emit("", m, x);

        string Emit(string path, nn.Module m, string x) => m switch
        {
            Conv2d c => Conv(path, c, x),
            Linear l => Linear(path, l, x),
            LayerNorm ln => g.Node("LayerNormalization", path, Affine(path, x, ln.weight, ln.bias), ("axis", -1L), ("epsilon", ln.eps)),
            LayerNorm2d ln => ChannelsLast(path, x, y => g.Node("LayerNormalization", path,
                Affine(path, y, Param(ln, "weight", path), Param(ln, "bias", path)), ("axis", -1L), ("epsilon", ln.Eps))),
            BatchNorm2d bn => g.Node("BatchNormalization", path,
                new[] { x, g.Weight(Join(path, "weight"), bn.weight!), g.Weight(Join(path, "bias"), bn.bias!),
                        g.Weight(Join(path, "running_mean"), bn.running_mean!), g.Weight(Join(path, "running_var"), bn.running_var!) },
                ("epsilon", bn.eps)),
            Identity => x,
            Sequential s => s.named_children().Aggregate(x, (h, c) => Emit(Join(path, c.name), c.module, h)),
            Mlp => Sub(m, path, "fc2", Gelu(path, Sub(m, path, "fc1", x))),
            ModulesToSaveWrapper w => Emit(path, w.Copy(w.ActiveAdapter!), x),
            BottleneckAdapter => Sub(m, path, "fc2", Gelu(path, Sub(m, path, "fc1", x))),
            AdaptFormerModule => Sub(m, path, "up_proj", g.Node("Relu", path, new[] { Sub(m, path, "down_proj", x) })),
            VisionTransformer v => Vit(path, v, x),
            PatchEmbed => Tokens(path, Sub(m, path, "proj", x)),
            Block => VitBlock(path, m, x),
            Attention a => SelfAttention(path, a, x),
            ConvNeXt => ConvNeXtNet(path, m, x),
            ConvNeXtStage => ((ModuleList<ConvNeXtBlock>)Child(m, "blocks", path)).Select((b, i) => (b, i))
                .Aggregate(Sub(m, path, "downsample", x), (h, bi) => Emit(Join(path, $"blocks.{bi.i}"), bi.b, h)),
            ConvNeXtBlock => ConvNeXtBlockNodes(path, m, x),
            NormClassifierHead => Sub(m, path, "fc", g.Node("Flatten", path, new[] { Sub(m, path, "norm", g.Node("GlobalAveragePool", path, new[] { x })) }, ("axis", 1L))),
            ResNet r => ResNetNet(path, r, x),
            BasicBlock or Bottleneck => ResidualBlock(path, m, x),
            _ => throw new NotSupportedException($"Cannot export to ONNX: '{path}' is a {m.GetType().Name}, a module ONNX export does not know."),
        };

        string[] Affine(string path, string x, Tensor? weight, Tensor? bias)
        {
            var inputs = new List<string> { x };
            if (weight is not null) inputs.Add(g.Weight(Join(path, "weight"), weight));
            if (bias is not null) inputs.Add(g.Weight(Join(path, "bias"), bias));
            return inputs.ToArray();
        }

        string Conv(string path, Conv2d c, string x)
        {
            if (c.padding_type is not null && c.padding_type != Padding.Valid)
                throw new NotSupportedException($"Cannot export to ONNX: '{path}' uses padding 'same', which this exporter does not write.");
            if (c.padding_mode != PaddingModes.Zeros)
                throw new NotSupportedException($"Cannot export to ONNX: '{path}' pads with {c.padding_mode}, which ONNX's Conv does not do.");
            var pad = c.padding_type == Padding.Valid ? new long[] { 0, 0 } : new[] { c.padding![0], c.padding[1] };
            return g.Node("Conv", path, Affine(path, x, c.weight, c.bias),
                ("kernel_shape", new[] { c.kernel_size[0], c.kernel_size[1] }), ("strides", new[] { c.stride[0], c.stride[1] }),
                ("pads", new[] { pad[0], pad[1], pad[0], pad[1] }), ("dilations", new[] { c.dilation[0], c.dilation[1] }), ("group", c.groups));
        }

        /// x·Wᵀ + b for inputs of any rank ([B, C] heads, [B, N, C] tokens): the initializer keeps
        /// timm's [out, in] layout and a Transpose (folded by ONNX Runtime) feeds MatMul.
        string Linear(string path, Linear l, string x)
        {
            var wt = g.Node("Transpose", path, new[] { g.Weight(Join(path, "weight"), l.weight!) }, ("perm", new long[] { 1, 0 }));
            var y = g.Node("MatMul", path, new[] { x, wt });
            return l.bias is null ? y : g.Node("Add", path, new[] { y, g.Weight(Join(path, "bias"), l.bias) });
        }

        /// GELU in its exact (erf) form, as torch's default gelu: x · ½ · (1 + erf(x / √2)).
        string Gelu(string path, string x)
        {
            var e = g.Node("Erf", path, new[] { g.Node("Div", path, new[] { x, g.Constant("sqrt2", MathF.Sqrt(2f)) }) });
            var h = g.Node("Mul", path, new[] { x, g.Node("Add", path, new[] { e, g.Constant("one", 1f) }) });
            return g.Node("Mul", path, new[] { h, g.Constant("half", 0.5f) });
        }

        string ToChannelsLast(string path, string x) => g.Node("Transpose", path, new[] { x }, ("perm", new long[] { 0, 2, 3, 1 }));
        string ToChannelsFirst(string path, string x) => g.Node("Transpose", path, new[] { x }, ("perm", new long[] { 0, 3, 1, 2 }));
        string ChannelsLast(string path, string x, Func<string, string> f) => ToChannelsFirst(path, f(ToChannelsLast(path, x)));

        /// [B, C, H, W] → [B, H·W, C] (flatten(2).transpose(1, 2)).
        string Tokens(string path, string x) =>
            g.Node("Transpose", path, new[] { g.Node("Reshape", path, new[] { x, g.Longs("shape_b_c_flat", 0, 0, -1) }) }, ("perm", new long[] { 0, 2, 1 }));

        string Vit(string path, VisionTransformer v, string x)
        {
            var t = Sub(v, path, "patch_embed", x);
            // the class token broadcast to the batch: Expand to [N, 1, 1] with N read off the input
            var batch = g.Node("Slice", path, new[] { g.Node("Shape", path, new[] { x }), g.Longs("zero", 0), g.Longs("one", 1) });
            var shape = g.Node("Concat", path, new[] { batch, g.Longs("one_one", 1, 1) }, ("axis", 0L));
            var cls = g.Node("Expand", path, new[] { g.Weight(Join(path, "cls_token"), Param(v, "cls_token", path)), shape });
            t = g.Node("Concat", path, new[] { cls, t }, ("axis", 1L));
            t = g.Node("Add", path, new[] { t, g.Weight(Join(path, "pos_embed"), Param(v, "pos_embed", path)) });
            var blocks = (ModuleList<Block>)Child(v, "blocks", path);
            if (v.Prompts is { } p) t = PromptedBlocks(path, p, blocks, batch, t);
            else for (var i = 0; i < blocks.Count; i++) t = Emit(Join(path, $"blocks.{i}"), blocks[i], t);
            t = Sub(v, path, "norm", t);
            var first = g.Node("Gather", path, new[] { t, g.LongScalar("index0", 0) }, ("axis", 1L));
            return Sub(v, path, "head", first);
        }

        /// VPT as VisionTransformer.ForwardFeatures: [cls, P₀, patches], deep prompts replacing the
        /// prompt positions before each later block, the prompt outputs dropped after the last.
        string PromptedBlocks(string path, VisualPrompts p, ModuleList<Block> blocks, string batch, string t)
        {
            var prompts = Join(path, "prompt");
            long n = p.Tokens, dim = p.prompt_embeddings.shape[2];
            var shape = g.Node("Concat", prompts, new[] { batch, g.Longs($"shape_prompts_{n}_{dim}", n, dim) }, ("axis", 0L));
            string Prompt(int i)
            {
                using var pi = p.prompt_embeddings[i].unsqueeze(0).detach();
                return g.Node("Expand", prompts, new[] { g.Weight($"{prompts}.prompt_embeddings.{i}", pi), shape });
            }
            string Tokens(string x, long from, long to) =>
                g.Node("Slice", prompts, new[] { x, g.Longs($"start_{from}", from), g.Longs($"end_{to}", to), g.Longs("axis_1", 1) });
            const long End = long.MaxValue;
            string Cls(string x) => Tokens(x, 0, 1);
            t = g.Node("Concat", prompts, new[] { Cls(t), Prompt(0), Tokens(t, 1, End) }, ("axis", 1L));
            for (var i = 0; i < blocks.Count; i++)
            {
                if (i > 0 && p.Deep) t = g.Node("Concat", prompts, new[] { Cls(t), Prompt(i), Tokens(t, 1 + n, End) }, ("axis", 1L));
                t = Emit(Join(path, $"blocks.{i}"), blocks[i], t);
            }
            return g.Node("Concat", prompts, new[] { Cls(t), Tokens(t, 1 + n, End) }, ("axis", 1L));
        }

        /// timm's block, with the bottleneck adapters / AdaptFormer / Convpass of Block.forward when
        /// present, in its order: x += s·convpass_attn(norm1(x)) beside the attention, x += adapter_attn(x)
        /// after it; x += s·convpass_mlp(norm2(x)) and x += s · adapter_mlp(norm2(x)) beside the MLP.
        string VitBlock(string path, nn.Module b, string x)
        {
            var children = b.named_children().ToDictionary(c => c.name, c => c.module);
            var n1 = Sub(b, path, "norm1", x);
            x = g.Node("Add", path, new[] { x, Sub(b, path, "attn", n1) });
            if (children.ContainsKey("convpass_attn")) x = g.Node("Add", path, new[] { x, Bypass(path, (Block)b, "convpass_attn", n1) });
            if (children.ContainsKey("adapter_attn")) x = g.Node("Add", path, new[] { x, Sub(b, path, "adapter_attn", x) });
            var n = Sub(b, path, "norm2", x);
            x = g.Node("Add", path, new[] { x, Sub(b, path, "mlp", n) });
            if (children.ContainsKey("convpass_mlp")) x = g.Node("Add", path, new[] { x, Bypass(path, (Block)b, "convpass_mlp", n) });
            if (!children.ContainsKey("adapter_mlp")) return x;
            var scale = (float)((Block)b).MlpAdapterScale;
            var a = Sub(b, path, "adapter_mlp", n);
            if (scale != 1f) a = g.Node("Mul", path, new[] { a, g.Constant($"adapter_scale_{scale}", scale) });
            return g.Node("Add", path, new[] { x, a });
        }

        /// s · Convpass(x) as Block's bypass computes it (ConvpassModule.ForwardTokens in eval, dropout
        /// the identity): down → QuickGELU; the last side² tokens as a [B, r, side, side] grid through
        /// the 3×3 conv, each leading token (class token, VPT prompts) through the same conv as a 1×1
        /// image; QuickGELU → up, `Mul` by s.
        string Bypass(string blockPath, Block b, string name, string x)
        {
            var path = Join(blockPath, name);
            var m = (ConvpassModule)Child(b, name, blockPath);
            long side = b.GridSide, hw = side * side, r = m.adapter_down.out_features;
            if (side <= 0) throw new NotSupportedException($"Cannot export to ONNX: '{blockPath}' does not know its patch grid (a Block outside a VisionTransformer).");
            var d = QuickGelu(path, Sub(m, path, "adapter_down", x));
            string Tokens(long from, long to) =>
                g.Node("Slice", path, new[] { d, g.Longs($"start_{from}", from), g.Longs($"end_{to}", to), g.Longs("axis_1", 1) });
            // the patch grid, row-major: [B, hw, r] → [B, r, side, side] → conv → [B, hw, r]
            var grid = g.Node("Transpose", path, new[] { g.Node("Reshape", path, new[] { Tokens(-hw, long.MaxValue), g.Longs($"shape_grid_{side}_{r}", 0, side, side, r) }) }, ("perm", new long[] { 0, 3, 1, 2 }));
            var patches = g.Node("Reshape", path, new[] { ToChannelsLast(path, Sub(m, path, "adapter_conv", grid)), g.Longs($"shape_grid_tokens_{hw}_{r}", 0, hw, r) });
            // the leading tokens, each a [r, 1, 1] image (only the kernel's centre tap reaches it), back to [B, lead, r]
            var lead = Tokens(0, -hw);
            var images = g.Node("Reshape", path, new[] { lead, g.Longs($"shape_single_{r}", -1, r, 1, 1) });
            var single = g.Node("Reshape", path, new[] { Sub(m, path, "adapter_conv", images), g.Node("Shape", path, new[] { lead }) });
            var h = g.Node("Concat", path, new[] { single, patches }, ("axis", 1L));
            var y = Sub(m, path, "adapter_up", QuickGelu(path, h));
            var s = (float)b.BypassScale;
            return s == 1f ? y : g.Node("Mul", path, new[] { y, g.Constant($"bypass_scale_{s}", s) });
        }

        /// CLIP's QuickGELU (Convpass's activation): x · σ(1.702 x).
        string QuickGelu(string path, string x) =>
            g.Node("Mul", path, new[] { x, g.Node("Sigmoid", path, new[] { g.Node("Mul", path, new[] { x, g.Constant("quick_gelu", 1.702f) }) }) });

        /// qkv → [3, B, heads, N, d] → softmax(q·kᵀ/√d)·v → [B, N, C] → proj (scaled_dot_product_attention).
        string SelfAttention(string path, Attention a, string x)
        {
            var qkvLinear = (Linear)Child(a, "qkv", path);
            var dim = qkvLinear.out_features / 3;
            var heads = a.NumHeads;
            var qkv = Sub(a, path, "qkv", x);
            var split = g.Node("Reshape", path, new[] { qkv, g.Longs($"shape_qkv_{heads}_{dim / heads}", 0, 0, 3, heads, dim / heads) });
            split = g.Node("Transpose", path, new[] { split }, ("perm", new long[] { 2, 0, 3, 1, 4 }));
            string Part(long i) => g.Node("Gather", path, new[] { split, g.LongScalar($"index{i}", i) }, ("axis", 0L));
            var (q, k, v) = (Part(0), Part(1), Part(2));
            var kt = g.Node("Transpose", path, new[] { k }, ("perm", new long[] { 0, 1, 3, 2 }));
            var scores = g.Node("Mul", path, new[] { g.Node("MatMul", path, new[] { q, kt }), g.Constant($"attn_scale_{dim / heads}", 1f / MathF.Sqrt(dim / heads)) });
            var o = g.Node("MatMul", path, new[] { g.Node("Softmax", path, new[] { scores }, ("axis", -1L)), v });
            o = g.Node("Transpose", path, new[] { o }, ("perm", new long[] { 0, 2, 1, 3 }));
            o = g.Node("Reshape", path, new[] { o, g.Longs($"shape_tokens_{dim}", 0, 0, dim) });
            return Sub(a, path, "proj", o);
        }

        string ConvNeXtNet(string path, nn.Module m, string x)
        {
            var y = Sub(m, path, "stem", x);
            var stages = (ModuleList<ConvNeXtStage>)Child(m, "stages", path);
            for (var i = 0; i < stages.Count; i++) y = Emit(Join(path, $"stages.{i}"), stages[i], y);
            return Sub(m, path, "head", y);
        }

        /// conv_dw, then norm, mlp and the layer scale channels-last (gamma broadcasts over C there), residual.
        string ConvNeXtBlockNodes(string path, nn.Module b, string x)
        {
            var y = ToChannelsLast(path, Sub(b, path, "conv_dw", x));
            y = Sub(b, path, "mlp", Sub(b, path, "norm", y));
            y = g.Node("Mul", path, new[] { y, g.Weight(Join(path, "gamma"), Param(b, "gamma", path)) });
            return g.Node("Add", path, new[] { ToChannelsFirst(path, y), x });
        }

        string ResNetNet(string path, ResNet r, string x)
        {
            var y = g.Node("Relu", path, new[] { Sub(r, path, "bn1", Sub(r, path, "conv1", x)) });
            y = g.Node("MaxPool", path, new[] { y }, ("kernel_shape", new long[] { 3, 3 }), ("strides", new long[] { 2, 2 }), ("pads", new long[] { 1, 1, 1, 1 }));
            for (var i = 1; i <= r.Config.Layers.Length; i++) y = Sub(r, path, $"layer{i}", y);
            var pooled = g.Node("Flatten", path, new[] { g.Node("GlobalAveragePool", path, new[] { y }) }, ("axis", 1L));
            return Sub(r, path, "fc", pooled);
        }

        /// BasicBlock (conv1-bn1-relu-conv2-bn2) or Bottleneck (… conv3-bn3), + shortcut, ReLU.
        string ResidualBlock(string path, nn.Module b, string x)
        {
            var convs = b is Bottleneck ? 3 : 2;
            var y = x;
            for (var i = 1; i <= convs; i++)
            {
                y = Sub(b, path, $"bn{i}", Sub(b, path, $"conv{i}", y));
                if (i < convs) y = g.Node("Relu", path, new[] { y });
            }
            var hasDown = b.named_children().Any(c => c.name == "downsample");
            var shortcut = hasDown ? Sub(b, path, "downsample", x) : x;
            return g.Node("Relu", path, new[] { g.Node("Add", path, new[] { y, shortcut }) });
        }
    }
}
