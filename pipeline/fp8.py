"""Products in float8 (e4m3) with one scale per row of each operand, for frozen weights.

A QLoRA step spends most of its time in the products of the frozen base weight: forward, its recomputation
under checkpointing, and the gradient to the input. Hopper and Blackwell tensor cores run e4m3 at twice the
bf16 rate. The weight is quantised with one scale per output feature, activations with one per token; the
product accumulates in fp32 and returns in the activation's dtype (torch._scaled_mm, "rowwise" scaling).

The gradient to the input, grad @ W, contracts over the output features, across which a per-row scale of W
cannot be factored out. So the same e4m3 weight serves both products: its row scales multiply the gradient's
columns before the gradient is quantised per token. The backward then uses exactly the weight the forward
used, and the weight is quantised once per use.

Written here because torchao's float8 training converts trainable nn.Linear weights, and these weights are
frozen NF4, dequantised at each use. The quantisation and the weight's transposition are Triton kernels: eager
PyTorch takes five passes over each operand, and torch's transposing copy of 1-byte elements took 0.79 ms for
an MLP weight against the tiled kernel's 0.10 (bench/fp8_products.py).
"""
from __future__ import annotations

from functools import cache

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max
ALIGN = 16  # torch._scaled_mm wants every dimension of both operands a multiple of 16


def supported(*shape: int) -> bool:
    return all(size % ALIGN == 0 for size in shape)


def _reference_rows(t: torch.Tensor, multiplier: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    t = t.float() if multiplier is None else t.float() * multiplier
    scale = t.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / E4M3_MAX
    return (t / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def _triton_rows(t: torch.Tensor, multiplier: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    t = t.contiguous()
    rows, cols = t.shape
    q = torch.empty_like(t, dtype=E4M3)
    scale = torch.empty(rows, 1, device=t.device, dtype=torch.float32)
    _build_kernels()[0][(rows,)](t, t if multiplier is None else multiplier, q, scale, cols,
                                 HAS_MULTIPLIER=multiplier is not None, BLOCK=1024, num_warps=4)
    return q, scale


def _triton_transpose(q: torch.Tensor) -> torch.Tensor:
    rows, cols = q.shape
    out = torch.empty(cols, rows, device=q.device, dtype=q.dtype)
    tile = 64
    _build_kernels()[1][(-(-rows // tile), -(-cols // tile))](q.contiguous().view(torch.uint8),
                                                              out.view(torch.uint8), rows, cols, TILE=tile,
                                                              num_warps=4)
    return out


@cache
def _build_kernels():
    """Triton is imported (and the kernels defined) on the first CUDA call only: CPU machines have no Triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def rows_kernel(x_ptr, mul_ptr, q_ptr, scale_ptr, cols, HAS_MULTIPLIER: tl.constexpr, BLOCK: tl.constexpr):
        # one program per row: its absolute maximum in one pass, the scaled values in a second (a row is at most
        # 21,504 values, so the second read comes from L2)
        row = tl.program_id(0).to(tl.int64)
        offsets = tl.arange(0, BLOCK)
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, cols, BLOCK):
            mask = start + offsets < cols
            v = tl.load(x_ptr + row * cols + start + offsets, mask=mask, other=0.0).to(tl.float32)
            if HAS_MULTIPLIER:
                v = v * tl.load(mul_ptr + start + offsets, mask=mask, other=0.0)
            amax = tl.maximum(amax, tl.abs(v))
        scale = tl.maximum(tl.max(amax, axis=0), 1e-12) / 448.0
        tl.store(scale_ptr + row, scale)
        for start in range(0, cols, BLOCK):
            mask = start + offsets < cols
            v = tl.load(x_ptr + row * cols + start + offsets, mask=mask, other=0.0).to(tl.float32)
            if HAS_MULTIPLIER:
                v = v * tl.load(mul_ptr + start + offsets, mask=mask, other=0.0)
            q = tl.clamp(tl.div_rn(v, scale), -448.0, 448.0)
            tl.store(q_ptr + row * cols + start + offsets, q.to(tl.float8e4nv), mask=mask)

    @triton.jit
    def transpose_kernel(x_ptr, y_ptr, rows, cols, TILE: tl.constexpr):
        # torch's strided copy of 1-byte elements measured ~0.8 ms for a 21,504 x 5,376 weight; by tiles it is
        # a read and a write at memory speed
        r = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)
        c = tl.program_id(1).to(tl.int64) * TILE + tl.arange(0, TILE)
        tile = tl.load(x_ptr + r[:, None] * cols + c[None, :], mask=(r[:, None] < rows) & (c[None, :] < cols))
        tl.store(y_ptr + c[:, None] * rows + r[None, :], tl.trans(tile),
                 mask=(c[:, None] < cols) & (r[None, :] < rows))

    return rows_kernel, transpose_kernel


def quantize_rows(t: torch.Tensor, multiplier: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """t (2-D), times `multiplier` (one fp32 factor per column) if given, in e4m3 with one fp32 scale per row
    (rows, 1): t * multiplier ≈ q * scale."""
    return (_triton_rows if t.is_cuda else _reference_rows)(t, multiplier)


def for_forward(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A frozen (out, in) weight: e4m3 (out, in) and one scale per output feature (out, 1)."""
    return quantize_rows(weight)


def transposed(q: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The quantised weight laid out for `input_grad`: (in, out) row-major, as torch._scaled_mm wants it."""
    return (_triton_transpose(q) if q.is_cuda else q.t().contiguous()), scale.reshape(1, -1)


def _scaled(a_q, a_scale, b, b_scale, dtype, rows: int) -> torch.Tensor:
    out = torch._scaled_mm(a_q, b.t(), scale_a=a_scale, scale_b=b_scale.reshape(1, -1), out_dtype=dtype)
    return out[:rows] if out.shape[0] != rows else out


def _padded(a: torch.Tensor) -> torch.Tensor:
    pad = -a.shape[0] % ALIGN
    return torch.nn.functional.pad(a, (0, 0, 0, pad)) if pad else a


def forward(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (tokens, in) @ W.T for W ≈ q * scale from `for_forward`, in x's dtype."""
    x_q, x_scale = quantize_rows(_padded(x))
    return _scaled(x_q, x_scale, q, scale, x.dtype, x.shape[0])


def input_grad(grad: torch.Tensor, q_t: torch.Tensor, row_scale: torch.Tensor) -> torch.Tensor:
    """grad (tokens, out) @ W for the same W, given `transposed(q, scale)`: the weight's row scales move onto the
    gradient's columns, where a per-token scale can then be taken."""
    grad_q, grad_scale = quantize_rows(_padded(grad), row_scale.reshape(-1))
    ones = torch.ones(1, q_t.shape[0], device=q_t.device, dtype=torch.float32)
    return _scaled(grad_q, grad_scale, q_t, ones, grad.dtype, grad.shape[0])
