"""Attention for packed rows: several documents in one row, kept apart by position ids that restart per document.

transformers' SDPA path turns a packed row into a block-diagonal 4D mask, and SDPA's masked kernels are ~11x
slower than its causal ones (Gemma-3-27B layer, 8k tokens, fwd+bwd: 14.5 ms vs 1.3 ms, measured on an H200).
torch's own varlen kernel (FlashAttention over cumulative sequence lengths, `torch.nn.attention.varlen.varlen_attn`,
torch >= 2.11) attends within each document directly (2.2 ms against SDPA's 12.9 on an H100:
bench/results/varlen-check-*.json). `register_varlen_attention()` registers it with transformers
and returns the name to pass as `attn_implementation` (or to `model.set_attn_implementation`).

For training only: causal decoders, no KV cache (generate with sdpa), no padded rows (rows are packed, as TRL's
padding-free collator makes them, or all the same length), no dropout, no attention logit softcapping (Gemma 2).
Anything else is refused with a one-line error rather than computed wrongly. Text only: the bidirectional
image-token blocks of Gemma 3's vision inputs are not applied.
"""
from __future__ import annotations

import functools
import inspect
import itertools

import torch
import torch.nn.functional as F

from pipeline.errors import PipelineError

VARLEN = "torch_varlen"  # no "sdpa"/"flash"/"flex" in it: transformers dispatches on those substrings


def register_varlen_attention() -> str:
    """Register VARLEN with transformers' attention and mask interfaces; returns VARLEN. Idempotent."""
    varlen_attn = _varlen_attn()
    if "window_size" not in inspect.signature(varlen_attn).parameters:
        raise PipelineError(f"attention {VARLEN}: torch {torch.__version__}'s varlen_attn has no window_size "
                            "(sliding-window layers); torch >= 2.11 is needed")
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    # Without a mask function of its own, transformers would skip mask creation and silently drop a padding
    # mask; with this one it builds no 4D mask (as for flash attention) and hands padding on to be refused.
    AttentionMaskInterface.register(VARLEN, padding_only_mask)
    return VARLEN


@functools.cache
def _varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        raise PipelineError(f"attention {VARLEN}: torch {torch.__version__} has no torch.nn.attention.varlen; "
                            "torch >= 2.11 is needed") from None
    return varlen_attn


@functools.cache
def _native_gqa() -> bool:
    """torch 2.13's varlen_attn takes fewer KV heads than query heads (enable_gqa); torch 2.11's does not."""
    return "enable_gqa" in inspect.signature(_varlen_attn()).parameters


def padding_only_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                      mask_function=None, attention_mask: torch.Tensor | None = None, **kwargs):
    """The mask transformers builds for VARLEN: none. The causal, sliding-window and per-document pattern is the
    kernel's (from position ids); a 2D padding mask with zeros is passed on for the attention to refuse."""
    if attention_mask is not None and attention_mask.shape[-1] == kv_length and bool(attention_mask.all()):
        return None
    return attention_mask


def document_bounds(position_ids: torch.Tensor | None, batch: int, length: int,
                    cu_seq_lens: torch.Tensor | None = None, max_length: int | None = None,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, int]:
    """(cu_seqlens as int32 [documents + 1], longest document) of the batch's tokens flattened row after row.

    A document starts at each row's start and wherever the position id does not follow the previous one by 1,
    the rule transformers' SDPA path uses for packed rows (masking_utils.find_packed_sequence_indices). TRL's
    padding-free collator computes the same bounds on the CPU (cu_seq_lens_q, max_length_q): taken as given,
    which spares a device-to-host sync in every layer."""
    if cu_seq_lens is not None:
        if batch != 1:
            raise PipelineError(f"attention {VARLEN}: cu_seq_lens_q describes one flattened row, got {batch} rows")
        cu_seq_lens = cu_seq_lens.to(device=device, dtype=torch.int32)
        longest = max_length if max_length is not None else cu_seq_lens.diff().max()
        return cu_seq_lens, int(longest)
    if position_ids is None:
        return torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=device), length
    if position_ids.ndim != 2:
        raise PipelineError(f"attention {VARLEN}: position ids of shape {tuple(position_ids.shape)}; "
                            "expected [batch, tokens]")
    positions = position_ids.to(device).expand(batch, length)  # the model may pass one row for the whole batch
    starts = torch.ones(batch, length, dtype=torch.bool, device=device)
    starts[:, 1:] = positions[:, 1:] - positions[:, :-1] != 1
    total = torch.tensor([batch * length], device=device)
    cu_seqlens = torch.cat([starts.flatten().nonzero().flatten(), total]).to(torch.int32)
    return cu_seqlens, int(cu_seqlens.diff().max())


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             sliding_window: int | None = None, softcap: float | None = None,
                             is_causal: bool | None = None, position_ids: torch.Tensor | None = None,
                             cu_seq_lens_q: torch.Tensor | None = None, max_length_q: int | None = None,
                             **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: query [batch, heads, tokens, dim], key/value [batch, kv heads, tokens,
    dim] in; [batch, tokens, heads, dim] out, as sdpa_attention_forward returns it, and no attention weights."""
    refuse_unsupported(module, query, key, attention_mask, dropout, softcap, is_causal, kwargs)
    batch, heads, length, _ = query.shape
    cu_seqlens, longest = document_bounds(position_ids, batch, length, cu_seq_lens_q, max_length_q, query.device)
    # The kernel takes every document of every row as one ragged batch of tokens: [tokens, heads, dim]
    q, k, v = (x.transpose(1, 2).reshape(batch * length, x.shape[1], x.shape[3]) for x in (query, key, value))
    # transformers' window W lets a token see itself and the W - 1 before it (masking_utils.sliding_window_overlay:
    # kv > q - W); the kernel's (left, right) window sees keys q - left .. q + right.
    window = (-1, 0) if sliding_window is None else (sliding_window - 1, 0)
    if query.is_cuda:
        out = flash_varlen(q, k, v, cu_seqlens, longest, scaling, window)
    else:
        out = per_document_sdpa(q, k, v, cu_seqlens, scaling, window)
    return out.view(batch, length, heads, value.shape[-1]), None


def refuse_unsupported(module, query, key, attention_mask, dropout, softcap, is_causal, kwargs) -> None:
    problem = None
    if attention_mask is not None:
        problem = (f"rows must not be padded or masked (got a {tuple(attention_mask.shape)} attention mask); "
                   "pack them (TRL padding_free) or use sdpa")
    elif query.shape[2] != key.shape[2]:
        problem = "no KV cache (query and key lengths differ): generate with sdpa"
    elif softcap is not None:
        problem = "attention logit softcapping (Gemma 2) is not in torch's varlen kernel: use eager"
    elif dropout > 0:
        problem = f"attention dropout {dropout} is not in torch's varlen kernel: set attention_dropout to 0"
    elif not (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        problem = "causal attention only (this layer is bidirectional): use sdpa"
    elif kwargs.get("s_aux") is not None:
        problem = "attention sinks (s_aux) are not in torch's varlen kernel"
    if problem:
        raise PipelineError(f"attention {VARLEN}: {problem}")


def flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, longest: int,
                 scale: float | None, window: tuple[int, int]) -> torch.Tensor:
    """torch's varlen FlashAttention kernel on CUDA. Output in the kernel's dtype (fp16/bf16)."""
    if q.dtype not in (torch.float16, torch.bfloat16):
        # prepare_model_for_kbit_training upcasts the embedding to fp32, and rotary embeddings then promote q and k
        # to fp32; SDPA is cast back by autocast, a custom op is not. The kernel takes half precision only.
        if not torch.is_autocast_enabled("cuda"):
            raise PipelineError(f"attention {VARLEN}: {q.dtype} query without autocast; the kernel takes fp16/bf16")
        target = torch.get_autocast_dtype("cuda")
        q, k, v = q.to(target), k.to(target), v.to(target)
    else:
        k, v = k.to(q.dtype), v.to(q.dtype)
    gqa = {}
    if k.shape[1] != q.shape[1]:
        if _native_gqa():
            gqa = {"enable_gqa": True}
        else:
            k, v = repeat_kv_heads(k, q.shape[1]), repeat_kv_heads(v, q.shape[1])
    # window_size must be a tuple: varlen_attn tests `window_size == (-1, 0)` to pick its causal path
    return _varlen_attn()(q, k, v, cu_seqlens, cu_seqlens, longest, longest, scale=scale, window_size=tuple(window),
                          **gqa)


def repeat_kv_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[tokens, kv heads, dim] -> [tokens, heads, dim], each KV head serving its consecutive group of query heads
    (the grouping of transformers' repeat_kv)."""
    return x.repeat_interleave(heads // x.shape[1], dim=1)


def per_document_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                      scale: float | None, window: tuple[int, int]) -> torch.Tensor:
    """What the kernel computes, one document at a time through SDPA with a dense mask: for CPU (tests), where
    torch has no varlen kernel. A Python loop over documents; never used on CUDA."""
    k, v = repeat_kv_heads(k, q.shape[1]), repeat_kv_heads(v, q.shape[1])
    outputs = []
    for start, end in itertools.pairwise(cu_seqlens.tolist()):
        i = torch.arange(end - start, device=q.device)[:, None]
        j = torch.arange(end - start, device=q.device)[None, :]
        allowed = (j <= i) if window[0] < 0 else (j <= i) & (i - j <= window[0])
        document = [x[start:end].transpose(0, 1) for x in (q, k, v)]  # [heads, tokens, dim]
        outputs.append(F.scaled_dot_product_attention(*document, attn_mask=allowed, scale=scale).transpose(0, 1))
    return torch.cat(outputs)
