"""The frozen weight's products of one Gemma-3-27B decoder layer, bf16 against e4m3 (pipeline/fp8.py), on one GPU.

    python bench/fp8_products.py [--tokens 8192] [--repeats 20]

For each projection: x @ W.T (forward, run twice a step under checkpointing) and grad @ W (the gradient to the
input), in bf16 and through pipeline.fp8 with the quantisation of the activation or gradient included (and the
e4m3 product alone); the weight's own quantisation is timed apart (once per use, like the dequantisation it
follows), and its transposition for the input gradient. The Triton kernels are checked against the reference
the CPU tests use. Every kernel runs 5 times before the timed repeats; the median is reported. Writes
bench/results/fp8-products-<card>.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import save  # noqa: E402
from pipeline import fp8  # noqa: E402

# (in, out) of the seven projections of a Gemma-3-27B layer
PROJECTIONS = {"q_proj": (5376, 4096), "k_proj": (5376, 2048), "v_proj": (5376, 2048), "o_proj": (4096, 5376),
               "gate_proj": (5376, 21504), "up_proj": (5376, 21504), "down_proj": (21504, 5376)}


def timed(fn, repeats: int) -> float:
    """Median milliseconds of fn over `repeats` calls, after 5 untimed ones."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows, totals = {}, {"bf16_ms": 0.0, "fp8_ms": 0.0, "weight_quantise_ms": 0.0}
    for name, (k, n) in PROJECTIONS.items():
        x = torch.randn(args.tokens, k, device="cuda", dtype=torch.bfloat16)
        grad = torch.randn(args.tokens, n, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        weight = fp8.for_forward(w)
        kept = fp8.transposed(*weight)
        x_q = fp8.quantize_rows(x)
        row = {
            "forward_bf16_ms": timed(lambda: x @ w.t(), args.repeats),
            "forward_fp8_ms": timed(lambda: fp8.forward(x, *weight), args.repeats),
            "forward_fp8_product_only_ms": timed(
                lambda: torch._scaled_mm(x_q[0], weight[0].t(), scale_a=x_q[1], scale_b=weight[1].reshape(1, -1),
                                         out_dtype=torch.bfloat16), args.repeats),
            "input_grad_bf16_ms": timed(lambda: grad @ w, args.repeats),
            "input_grad_fp8_ms": timed(lambda: fp8.input_grad(grad, *kept), args.repeats),
            "weight_quantise_ms": timed(lambda: fp8.for_forward(w), args.repeats),
            "weight_transpose_ms": timed(lambda: fp8.transposed(*weight), args.repeats),
            "weight_transpose_torch_ms": timed(lambda: weight[0].t().contiguous(), args.repeats),
            "forward_relative_error": ((fp8.forward(x, *weight).float() - (x @ w.t()).float()).norm()
                                       / (x @ w.t()).float().norm()).item(),
        }
        # the GPU kernel against the reference quantisation that the CPU tests check
        for t, multiplier in ((x, None), (w, None), (grad, weight[1].reshape(-1))):
            q, scale = fp8.quantize_rows(t, multiplier)
            q_ref, scale_ref = fp8._reference_rows(t, multiplier)
            torch.testing.assert_close(scale, scale_ref, rtol=1e-6, atol=0)
            row.setdefault("kernel_codes_differing", 0)
            row["kernel_codes_differing"] += int((q.view(torch.uint8) != q_ref.view(torch.uint8)).sum())
        assert torch.equal(kept[0].view(torch.uint8), weight[0].t().contiguous().view(torch.uint8)), name
        rows[name] = {key: round(value, 4) for key, value in row.items()}
        # a step under checkpointing: forward twice, the input gradient once; the weight quantised twice (forward,
        # recomputation) and transposed once (backward)
        totals["bf16_ms"] += 2 * row["forward_bf16_ms"] + row["input_grad_bf16_ms"]
        totals["fp8_ms"] += 2 * row["forward_fp8_ms"] + row["input_grad_fp8_ms"]
        totals["weight_quantise_ms"] += 2 * row["weight_quantise_ms"] + row["weight_transpose_ms"]
        print(name, rows[name], flush=True)
    totals = {key: round(value, 3) for key, value in totals.items()}
    totals["speedup"] = round(totals["bf16_ms"] / (totals["fp8_ms"] + totals["weight_quantise_ms"]), 3)
    print(totals)
    card = torch.cuda.get_device_name().lower().replace(" ", "-")
    versions = {"torch": torch.__version__, "triton": triton.__version__}
    save(f"fp8-products-{card}", {"card": torch.cuda.get_device_name(), "versions": versions,
                                  "layers": 1, "shape": "Gemma-3-27B decoder layer", "tokens": args.tokens,
                                  "repeats": args.repeats, "per_layer_step": totals, "projections": rows})


if __name__ == "__main__":
    main()
