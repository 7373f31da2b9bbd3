"""A LoRA projection on a frozen (4-bit) base weight as one autograd function.

PEFT computes `base(x).clone() + lora_B(lora_A(dropout(x))) * scaling`: besides the base product, a copy, the
adapter's wide output, a scaling and an add, each one more pass over an output of up to 21,504 columns per token;
its backward adds the same again. Here the rank-r intermediate carries the scaling and the adapter's wide product
is accumulated into the base product in place (a GEMM with beta=1), forward and backward alike: the same
arithmetic, with fewer round trips through memory. The adapter's weights stay PEFT's parameters, so saving,
loading and merging are PEFT's own. Written here because neither PEFT nor bitsandbytes fuses the two (Unsloth
does, by patching whole model classes).

`fuse(model)` gives every PEFT LoRA layer on a bitsandbytes 4-bit base this forward; a layer falls back to PEFT's
own whenever it is not the plain case (adapters disabled or merged, several or mixed adapters, DoRA, a bias).
With float8, the base weight's products run in e4m3 (pipeline/fp8.py); the adapter's stay in x's dtype.
"""
from __future__ import annotations

from functools import partial

import torch

from pipeline import fp8


class LoRAProduct(torch.autograd.Function):
    """y = x W^T + s * dropout(x) A^T B^T for a frozen W that `dequantize()` returns (out, in) in x's dtype."""

    @staticmethod
    def forward(ctx, x, lora_a, lora_b, dequantize, scaling: float, dropout: float, keep_weight: bool = False,
                float8: bool = False):
        flat = x.reshape(-1, x.shape[-1])
        weight = dequantize()
        if float8:
            weight = fp8.for_forward(weight)
            out = fp8.forward(flat, *weight)
        else:
            out = flat @ weight.t()
        dropped, mask = (torch.native_dropout(flat, dropout, True) if dropout else (flat, None))
        low = (dropped @ lora_a.to(x.dtype).t()) * scaling  # (tokens, r)
        out.addmm_(low, lora_b.to(x.dtype).t())
        ctx.dequantize, ctx.scaling, ctx.dropout, ctx.shape = dequantize, scaling, dropout, x.shape
        ctx.float8 = float8
        # keep_weight: the backward reuses this dequantised (or float8) weight instead of making it again; under
        # gradient checkpointing only the layer being recomputed holds it, otherwise every layer would
        kept = (weight if float8 else (weight, None)) if keep_weight else (None, None)
        ctx.save_for_backward(flat, mask, low, lora_a, lora_b, *kept)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        flat, mask, low, lora_a, lora_b, weight, scale = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1]).to(flat.dtype)
        a, b = lora_a.to(flat.dtype), lora_b.to(flat.dtype)
        grad_low = (grad @ b) * ctx.scaling  # (tokens, r): the gradient at dropout(x) A^T
        dropped = flat if mask is None else flat * mask * (1 / (1 - ctx.dropout))
        grad_a = (grad_low.t() @ dropped).to(lora_a.dtype) if ctx.needs_input_grad[1] else None
        grad_b = (grad.t() @ low).to(lora_b.dtype) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            if weight is None:
                weight = ctx.dequantize()
                if ctx.float8:
                    weight, scale = fp8.for_forward(weight)
            # transposed here, not in the forward: under checkpointing the first forward's saved tensors are
            # dropped unused
            grad_x = fp8.input_grad(grad, *fp8.transposed(weight, scale)) if ctx.float8 else grad @ weight
            if mask is None:
                grad_x.addmm_(grad_low, a)
            else:
                grad_x += torch.ops.aten.native_dropout_backward(grad_low @ a, mask, 1 / (1 - ctx.dropout))
            grad_x = grad_x.reshape(ctx.shape)
        return grad_x, grad_a, grad_b, None, None, None, None, None


def dequantizer(base) -> callable:
    """The frozen weight of a bitsandbytes Linear4bit (or a plain Linear) as (out, in) in its compute dtype."""
    weight = base.weight
    if type(weight).__name__ == "Params4bit":
        import bitsandbytes.functional as bnbf

        dtype = base.compute_dtype or torch.bfloat16
        return lambda: bnbf.dequantize_4bit(weight.data, weight.quant_state).to(dtype)
    return lambda: weight


def plain(layer) -> str | None:
    """The one active adapter when the layer computes plain LoRA on an unbiased base, else None."""
    adapters = [name for name in layer.active_adapters if name in layer.lora_A]
    if (layer.disable_adapters or layer.merged or len(adapters) != 1 or adapters[0] in layer.lora_variant
            or getattr(layer.get_base_layer(), "bias", None) is not None
            or layer.lora_B[adapters[0]].bias is not None):
        return None
    return adapters[0]


def forward(layer, original, keep_weight, float8, x, *args, **kwargs):
    adapter = plain(layer) if not args and not kwargs else None
    if adapter is None:
        return original(x, *args, **kwargs)
    base = layer.get_base_layer()
    if getattr(base.weight, "quant_state", True) is None:  # bitsandbytes restores it in its own forward
        return original(x, *args, **kwargs)
    dtype = getattr(base, "compute_dtype", None) or x.dtype
    dropout = layer.lora_dropout[adapter]
    p = dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
    out = LoRAProduct.apply(x.to(dtype), layer.lora_A[adapter].weight, layer.lora_B[adapter].weight,
                            dequantizer(base), float(layer.scaling[adapter]), p, keep_weight, float8)
    return out.to(x.dtype)


def fuse(model, layer_types: tuple | None = None, keep_weight: bool = False, float8: bool = False) -> int:
    """Give each PEFT LoRA layer of `layer_types` (default: on a bitsandbytes 4-bit base) the fused forward;
    returns how many. keep_weight: dequantise once per forward and backward pair (see LoRAProduct). float8: the
    base weight's products in e4m3 (pipeline/fp8.py) wherever its sizes allow; the adapter stays in x's dtype."""
    if layer_types is None:
        try:
            from peft.tuners.lora.bnb import Linear4bit
        except ImportError:  # no bitsandbytes (a CPU machine): no 4-bit layers to fuse
            return 0
        layer_types = (Linear4bit,)
    count = 0
    for module in model.modules():
        if isinstance(module, layer_types) and not hasattr(module, "_unfused_forward"):
            module._unfused_forward = module.forward
            module.forward = partial(forward, module, module._unfused_forward, keep_weight,
                                     float8 and fp8.supported(module.in_features, module.out_features))
            count += 1
    return count
