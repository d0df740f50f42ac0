/// Small hand-built module trees shaped like timm's ViT and ConvNeXt, for tuning tests (the model
/// zoo builds the real ones). Children are C# fields of type Module<Tensor, Tensor>, as the tuner needs.
module Lora.Tests.TuningModels

open TorchSharp
open TorchSharp.Modules
open Lora.Core.Tuning

type T = torch.Tensor
type M = torch.nn.Module<T, T>

type Attention(dim: int64, dev: torch.Device) as this =
    inherit M("Attention")
    let mutable qkv: M = torch.nn.Linear(dim, 3L * dim, device = dev)
    let mutable proj: M = torch.nn.Linear(dim, dim, device = dev)
    do this.RegisterComponents()
    override _.forward x =
        use h = qkv.forward x
        // a stand-in for attention: keep one third of qkv
        use v = h.narrow(-1, 2L * dim, dim)
        proj.forward v

type Mlp(dim: int64, hidden: int64, dev: torch.Device) as this =
    inherit M("Mlp")
    let mutable fc1: M = torch.nn.Linear(dim, hidden, device = dev)
    let act = torch.nn.GELU()
    let mutable fc2: M = torch.nn.Linear(hidden, dim, device = dev)
    do this.RegisterComponents()
    override _.forward x =
        use h = fc1.forward x
        use a = act.forward h
        fc2.forward a

type Block(dim: int64, dev: torch.Device) as this =
    inherit M("Block")
    let mutable norm1: M = torch.nn.LayerNorm([| dim |], device = dev)
    let mutable attn: M = new Attention(dim, dev)
    let mutable norm2: M = torch.nn.LayerNorm([| dim |], device = dev)
    let mutable mlp: M = new Mlp(dim, 4L * dim, dev)
    let mutable adapterAttn: M = null
    let mutable adapterMlp: M = null
    let mutable mlpScale = 0.5
    do this.RegisterComponents()
    override _.forward x =
        use n1 = norm1.forward x
        use a = attn.forward n1
        let mutable x = x + a
        if not (isNull adapterAttn) then
            use ad = adapterAttn.forward x
            x <- x + ad
        use n2 = norm2.forward x
        use m = mlp.forward n2
        let y = x + m
        if isNull adapterMlp then y
        else
            use ad = adapterMlp.forward n2
            y + ad * mlpScale
    interface IAdapterHost with
        member this.SetAdapters(a, m, scale) =
            this.register_module("adapter_attn", null)
            this.register_module("adapter_mlp", null)
            adapterAttn <- a
            adapterMlp <- m
            mlpScale <- scale
            if not (isNull a) then this.register_module("adapter_attn", a)
            if not (isNull m) then this.register_module("adapter_mlp", m)

/// ViT-shaped: patch_embed.proj, cls_token, pos_embed, blocks (ModuleList), norm, head.
type ViT(dim: int64, depth: int, patch: int64, img: int64, classes: int64, dev: torch.Device) as this =
    inherit M("ViT")
    let tokens = (img / patch) * (img / patch) + 1L
    let mutable patch_embed: M = torch.nn.Sequential([| ("proj", torch.nn.Conv2d(3L, dim, patch, stride = patch, device = dev) :> M) |])
    let cls_token = new Parameter(torch.zeros([| 1L; 1L; dim |], device = dev))
    let pos_embed = new Parameter(torch.randn([| 1L; tokens; dim |], device = dev) * 0.02)
    let blocks = new ModuleList<M>([| for _ in 1 .. depth -> new Block(dim, dev) :> M |])
    let mutable norm: M = torch.nn.LayerNorm([| dim |], device = dev)
    let mutable head: M = torch.nn.Linear(dim, classes, device = dev)
    do this.RegisterComponents()
    override _.forward x =
        use p = patch_embed.forward x
        use f = p.flatten(2).transpose(1, 2)
        use c = cls_token.expand(f.shape.[0], -1L, -1L)
        let mutable h = torch.cat([| c; f |], 1L) + pos_embed
        for b in blocks do
            let h2 = b.forward h
            h.Dispose()
            h <- h2
        use n = norm.forward h
        h.Dispose()
        use first = n.select(1, 0L)
        head.forward first

/// The parameter shapes of ConvNeXt-T's stages (dwconv, norm, pwconv fc1/fc2 as Linear, gamma),
/// stems and downsamples, without a head: enough for counts.
type CnBlock(dim: int64, dev: torch.Device) as this =
    inherit M("CnBlock")
    let mutable conv_dw: M = torch.nn.Conv2d(dim, dim, 7L, padding = 3L, groups = dim, device = dev)
    let mutable norm: M = torch.nn.LayerNorm([| dim |], device = dev)
    let mutable mlp: M = new Mlp(dim, 4L * dim, dev)
    let gamma = new Parameter(torch.ones(dim, device = dev))
    do this.RegisterComponents()
    override _.forward x = ignore (conv_dw, norm, mlp, gamma); x

/// Two Linears in a ModuleList<Module<Tensor, Tensor>>.
type ListHolder() as this =
    inherit M("ListHolder")
    let layers = new ModuleList<M>(torch.nn.Linear(4L, 4L), torch.nn.Linear(4L, 3L))
    do this.RegisterComponents()
    override _.forward x =
        use h = layers.[0].forward x
        layers.[1].forward h

/// A ModuleList typed ModuleList<Linear>: no tuning layer fits in it.
type NarrowListHolder() as this =
    inherit M("NarrowListHolder")
    let layers = new ModuleList<Linear>(torch.nn.Linear(4L, 4L))
    do this.RegisterComponents()
    override _.forward x = layers.[0].forward x

let vitB (dev: torch.Device) = new ViT(768L, 12, 16L, 224L, 100L, dev)

let vitTiny () = new ViT(16L, 2, 4L, 8L, 5L, torch.CPU)

/// ConvNeXt-T with a 1000-class head, parameter-for-parameter (28,589,128).
type ConvNeXtT(dev: torch.Device) as this =
    inherit M("ConvNeXt")
    let dims = [| 96L; 192L; 384L; 768L |]
    let depths = [| 3; 3; 9; 3 |]
    let stem = torch.nn.Sequential([| torch.nn.Conv2d(3L, 96L, 4L, stride = 4L, device = dev) :> M; torch.nn.LayerNorm([| 96L |], device = dev) |])
    let stages =
        new ModuleList<M>(
            [| for i in 0 .. 3 ->
                let blocks = new ModuleList<M>([| for _ in 1 .. depths.[i] -> new CnBlock(dims.[i], dev) :> M |])
                let ds =
                    if i = 0 then torch.nn.Sequential(Array.empty<M>) :> M
                    else torch.nn.Sequential([| torch.nn.LayerNorm([| dims.[i - 1] |], device = dev) :> M
                                                torch.nn.Conv2d(dims.[i - 1], dims.[i], 2L, stride = 2L, device = dev) |]) :> M
                torch.nn.Sequential([| ("downsample", ds); ("blocks", new SeqOf(blocks) :> M) |]) :> M |])
    let mutable norm_pre: M = torch.nn.LayerNorm([| 768L |], device = dev)
    let mutable head: M = torch.nn.Linear(768L, 1000L, device = dev)
    do this.RegisterComponents()
    override _.forward x = ignore (stem, stages, norm_pre, head); x

and SeqOf(list: ModuleList<M>) as this =
    inherit M("SeqOf")
    let blocks = list
    do this.RegisterComponents()
    override _.forward x = ignore blocks; x
