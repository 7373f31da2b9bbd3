"""Packed attention on a GPU: SDPA with transformers' block-diagonal mask vs torch's varlen kernel (pipeline.attention).

    python bench/varlen_check.py [--tokens 8192] [--repeats 10]

A random Gemma-3-27B-shaped model (bench/make_model.py's shape) of two decoder layers, one sliding-window and one
full, in bf16 with frozen weights (no LoRA); one row of documents with log-normal lengths (median ~600 tokens,
128..2048, as bench/throughput.py draws them) totalling --tokens, kept apart by position ids. Compared with SDPA:
- logits, and the gradient of a summed cross-entropy w.r.t. the input embeddings. Each document run alone
  through SDPA gives the bf16 noise floor; the row taken as one document, how far off cross-document
  attention would be. Varlen gets position ids only here, so its own bound derivation runs;
- one attention call per layer type (outputs and q/k/v gradients);
- a window probe at a 16-token window, where an off-by-one in the kernel's (left, right) window shows: the
  (W - 1, 0) the module passes should match SDPA, (W, 0) should not;
- forward+backward times (median of --repeats) of the model and of one attention call per layer type, with
  cu_seq_lens_q/max_length_q passed as TRL's padding-free collator does.
Prints a summary and writes bench/results/varlen-check-<card>.json (and a copy in $OUT if set). CUDA only.
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import json
import re
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import save  # noqa: E402
from bench.make_model import GEMMA3_27B  # noqa: E402
from pipeline.attention import (  # noqa: E402
    VARLEN,
    document_bounds,
    flash_varlen,
    register_varlen_attention,
)

PROBE_WINDOW = 16


def document_lengths(total: int, seed: int = 0) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < total:
        lengths.append(int(np.clip(rng.lognormal(np.log(600), 0.9), 128, 2048)))
    lengths[-1] -= sum(lengths) - total
    return lengths


def build_model():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"],
                              attn_implementation="sdpa", **GEMMA3_27B)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Gemma3ForCausalLM(config)
    return model.to(torch.bfloat16).eval().requires_grad_(False)


def difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Max absolute and relative (Frobenius) difference of a from b, in fp32, a chunk of tokens at a time."""
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    worst, squares, norm = 0.0, 0.0, 0.0
    for start in range(0, a.shape[0], 1024):
        x, y = a[start:start + 1024].float(), b[start:start + 1024].float()
        worst = max(worst, (x - y).abs().max().item())
        squares += (x - y).square().sum().item()
        norm += y.square().sum().item()
    return {"max_abs": worst, "relative": (squares / norm) ** 0.5}


def model_pass(model, input_ids, labels, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and d(summed cross-entropy)/d(input embeddings)."""
    embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_()
    logits = model(inputs_embeds=embeds, use_cache=False, **kwargs).logits
    F.cross_entropy(logits[0].float(), labels[0], reduction="sum").backward()
    return logits.detach(), embeds.grad


def milliseconds(repeats: int, step, *args, **kwargs) -> float:
    """Median time of step(*args, **kwargs) after 2 warm-up calls."""
    for _ in range(2):
        step(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(*args, **kwargs)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return round(statistics.median(times), 3)


def attention_pass(function, module, q, k, v, mask, grad, **kwargs) -> tuple[torch.Tensor, ...]:
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out, _ = function(module, q, k, v, mask, dropout=0.0, scaling=module.scaling, **kwargs)
    out.backward(grad)
    return out.detach(), q.grad, k.grad, v.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("varlen_check: needs a CUDA GPU")
    import transformers
    from torch.nn.attention.varlen import varlen_attn
    from transformers.masking_utils import (
        create_causal_mask,
        create_sliding_window_causal_mask,
    )
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    register_varlen_attention()
    model = build_model()
    config = model.config
    lengths = document_lengths(args.tokens)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, config.vocab_size, (1, args.tokens), generator=generator).cuda()
    labels = torch.randint(10, config.vocab_size, (1, args.tokens), generator=generator).cuda()
    positions = torch.cat([torch.arange(n) for n in lengths])[None].cuda()
    cu, longest = document_bounds(positions, 1, args.tokens, device="cuda")
    assert cu.diff().tolist() == lengths, "document bounds from position ids"
    collator = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}

    # Whole model: logits and input gradients
    model.set_attn_implementation("sdpa")
    sdpa_logits, sdpa_grad = model_pass(model, input_ids, labels, position_ids=positions)
    alone = [model_pass(model, input_ids[:, a:b], labels[:, a:b]) for a, b in itertools.pairwise(cu.tolist())]
    alone_logits, alone_grad = torch.cat([x[0] for x in alone], 1), torch.cat([x[1] for x in alone], 1)
    del alone
    sdpa_time = milliseconds(args.repeats, model_pass, model, input_ids, labels, position_ids=positions)
    model.set_attn_implementation(VARLEN)
    varlen_logits, varlen_grad = model_pass(model, input_ids, labels, position_ids=positions)
    leak_logits, leak_grad = model_pass(model, input_ids, labels)  # no position ids: the row is one document
    varlen_time = milliseconds(args.repeats, model_pass, model, input_ids, labels, position_ids=positions, **collator)
    results = {
        "model": {
            "logits": {"varlen_vs_sdpa": difference(varlen_logits, sdpa_logits),
                       "sdpa_each_document_alone_vs_sdpa": difference(alone_logits, sdpa_logits),
                       "varlen_as_one_document_vs_sdpa": difference(leak_logits, sdpa_logits)},
            "input_grad": {"varlen_vs_sdpa": difference(varlen_grad, sdpa_grad),
                           "sdpa_each_document_alone_vs_sdpa": difference(alone_grad, sdpa_grad),
                           "varlen_as_one_document_vs_sdpa": difference(leak_grad, sdpa_grad)},
            "fwd_bwd_ms": {"sdpa": sdpa_time, "varlen": varlen_time},
        },
    }
    del sdpa_logits, varlen_logits, alone_logits, leak_logits

    # One attention call per layer type, with the masks transformers builds for SDPA
    model.set_attn_implementation("sdpa")
    embeds = torch.empty(1, args.tokens, config.hidden_size, dtype=torch.bfloat16, device="cuda")
    masks = {"full_attention": create_causal_mask(config, embeds, None, None, positions),
             "sliding_attention": create_sliding_window_causal_mask(config, embeds, None, None, positions)}
    sdpa, varlen = ALL_ATTENTION_FUNCTIONS["sdpa"], ALL_ATTENTION_FUNCTIONS[VARLEN]
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    torch.manual_seed(0)
    q = torch.randn(1, heads, args.tokens, head_dim, dtype=torch.bfloat16, device="cuda")
    k, v = (torch.randn(1, kv_heads, args.tokens, head_dim, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    grad = torch.randn(1, args.tokens, heads, head_dim, dtype=torch.bfloat16, device="cuda")
    results["attention"] = {}
    for layer in model.model.layers:
        module = layer.self_attn
        kind = config.layer_types[module.layer_idx]
        window = {"sliding_window": module.sliding_window}
        reference = attention_pass(sdpa, module, q, k, v, masks[kind], grad, **window)
        ours = attention_pass(varlen, module, q, k, v, None, grad, position_ids=positions, **window)
        results["attention"][kind] = {
            **{name: difference(a, b) for name, a, b in zip(["out", "dq", "dk", "dv"], ours, reference)},
            "fwd_bwd_ms": {
                "sdpa": milliseconds(args.repeats, attention_pass, sdpa, module, q, k, v, masks[kind], grad, **window),
                "varlen": milliseconds(args.repeats, attention_pass, varlen, module, q, k, v, None, grad, **window,
                                       **collator),
            },
        }

    # Window probe: transformers' window W = the token and W - 1 before it
    config.sliding_window = PROBE_WINDOW
    probe_mask = create_sliding_window_causal_mask(config, embeds, None, None, positions)
    module = model.model.layers[0].self_attn
    reference = attention_pass(sdpa, module, q, k, v, probe_mask, grad, sliding_window=PROBE_WINDOW)[0]
    ours = attention_pass(varlen, module, q, k, v, None, grad, sliding_window=PROBE_WINDOW, **collator)[0]
    flat = [x.transpose(1, 2).reshape(args.tokens, x.shape[1], head_dim) for x in (q, k, v)]
    wider = flash_varlen(*flat, cu, longest, module.scaling, (PROBE_WINDOW, 0)).view_as(reference)
    results["window_probe"] = {"window": PROBE_WINDOW, "module_vs_sdpa": difference(ours, reference),
                               "kernel_window_W_0_vs_sdpa": difference(wider, reference)}

    m = results["model"]
    probe = results["window_probe"]
    results["ok"] = (all(m[x]["varlen_vs_sdpa"]["relative"] * 10 < m[x]["varlen_as_one_document_vs_sdpa"]["relative"]
                         for x in ("logits", "input_grad"))
                     and probe["module_vs_sdpa"]["relative"] * 10 < probe["kernel_window_W_0_vs_sdpa"]["relative"])
    card = torch.cuda.get_device_name()
    out = {"card": card, "torch": torch.__version__, "transformers": transformers.__version__,
           "native_gqa": "enable_gqa" in inspect.signature(varlen_attn).parameters, "tokens": args.tokens,
           "documents": lengths,
           "criterion": "varlen's relative error 10x below that of cross-document attention (the row as one "
                        "document), logits and input grads; window probe: 10x below (W, 0)'s", **results}
    print(json.dumps(out, indent=2))
    print(f"\n{card}, torch {torch.__version__}, {len(lengths)} documents in {args.tokens} tokens")
    print(f"model fwd+bwd: sdpa {m['fwd_bwd_ms']['sdpa']} ms, varlen {m['fwd_bwd_ms']['varlen']} ms")
    for kind, r in results["attention"].items():
        print(f"{kind}: sdpa {r['fwd_bwd_ms']['sdpa']} ms, varlen {r['fwd_bwd_ms']['varlen']} ms, "
              f"out rel err {r['out']['relative']:.2e}, dq rel err {r['dq']['relative']:.2e}")
    for x in ("logits", "input_grad"):
        r = m[x]
        print(f"{x} rel err: varlen {r['varlen_vs_sdpa']['relative']:.2e}, each document alone through sdpa "
              f"{r['sdpa_each_document_alone_vs_sdpa']['relative']:.2e} (bf16 noise), row as one document "
              f"{r['varlen_as_one_document_vs_sdpa']['relative']:.2e}")
    print(f"window probe rel err: (W - 1, 0) {probe['module_vs_sdpa']['relative']:.2e}, "
          f"(W, 0) {probe['kernel_window_W_0_vs_sdpa']['relative']:.2e}")
    print("ok" if results["ok"] else "NOT OK")
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    save(f"varlen-check-{slug}", out)


if __name__ == "__main__":
    main()
