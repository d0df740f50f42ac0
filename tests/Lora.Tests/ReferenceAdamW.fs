module Lora.Tests.ReferenceAdamW

open System
open System.Collections.Generic
open TorchSharp

type Tensor = torch.Tensor

/// AdamW written out per parameter (PyTorch's update rule; weight decay on parameters with 2 or more
/// dimensions, as timm and the Trainer do): the plain reference that Lora.Core.Training.FlatAdamW,
/// which training uses, is tested against. A parameter without a gradient is skipped, as in PyTorch.
type AdamW(parameters: struct (string * Modules.Parameter) seq, weightDecay: float, ?beta1: float, ?beta2: float, ?eps: float) =
    let parameters = Seq.toArray parameters
    let beta1, beta2, eps = defaultArg beta1 0.9, defaultArg beta2 0.999, defaultArg eps 1e-8
    let state = Dictionary<string, Tensor * Tensor>()
    let mutable steps = 0L

    member _.Step(lr: float) =
        steps <- steps + 1L
        let bc1, bc2 = 1.0 - Math.Pow(beta1, float steps), 1.0 - Math.Pow(beta2, float steps)
        use _ = torch.no_grad()
        // Scalars held for the whole step: a temporary can be finalized while the native call reads it
        use decay = (1.0 - lr * weightDecay).ToScalar()
        use b1 = beta1.ToScalar()
        use b1c = (1.0 - beta1).ToScalar()
        use b2 = beta2.ToScalar()
        use b2c = (1.0 - beta2).ToScalar()
        use invSqrtBc2 = (1.0 / Math.Sqrt bc2).ToScalar()
        use epsilon = eps.ToScalar()
        use stepSize = (-lr / bc1).ToScalar()
        for struct (name, p) in parameters do
            match p.grad with
            | null -> ()
            | g ->
                if not (state.ContainsKey name) then
                    state[name] <- (torch.zeros_like(p).DetachFromDisposeScope(), torch.zeros_like(p).DetachFromDisposeScope())
                let m, v = state[name]
                use _scope = torch.NewDisposeScope()
                if weightDecay <> 0.0 && p.dim() >= 2L then p.mul_(decay) |> ignore
                m.mul_(b1).add_(g, alpha = b1c) |> ignore
                v.mul_(b2).addcmul_(g, g, value = b2c) |> ignore
                let denom = v.sqrt().mul_(invSqrtBc2).add_(epsilon)
                p.addcdiv_(m, denom, value = stepSize) |> ignore

    /// exp_avg.NAME and exp_avg_sq.NAME for every parameter that has state (FlatAdamW's names).
    member _.State() =
        state |> Seq.collect (fun kv -> let m, v = kv.Value in [ struct ($"exp_avg.{kv.Key}", m); struct ($"exp_avg_sq.{kv.Key}", v) ])
