"""Training throughput of QLoRA configurations on one GPU: real (non-padding) tokens/s, peak memory, MFU.

    python bench/throughput.py MODEL_DIR --variants seed_fixed seed_variable --steps 10 --name NAME

Each variant runs in a fresh process (clean peak-memory figures; DeepSpeed and compiled kernels hold
process-wide state). Rows are random token ids: speed does not depend on the values. Fixed-length rows are
all `seq` tokens; variable-length rows draw lengths like web and Wikipedia documents (log-normal, median ~600
tokens, clipped to 128..seq). The first 3 steps are warm-up and not timed. A variant's `attention` (default sdpa)
picks the attention implementation; "varlen" is pipeline.attention's (torch's varlen kernel, for packed rows).

MFU counts 6 x (parameters that multiply every token: the decoder's matrices and the LM head) per real token,
plus attention's 12 x layers x seq x hidden per token over the causal half, against the card's dense bf16
peak (H100/H200 SXM: 989 TFLOP/s, datasheet).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import save  # noqa: E402

PEAK_BF16_FLOPS = 989e12
VARIANTS = {
    # the seed's configuration: batch 4 x 2048, no packing, gradient checkpointing, SDPA
    "seed_fixed": dict(lengths="fixed", packing=False, liger=False, bf16_cast=False),
    "seed_variable": dict(lengths="variable", packing=False, liger=False, bf16_cast=False),
    # levers, on the variable-length data (issue: training throughput)
    "packed": dict(lengths="variable", packing=True, liger=False, bf16_cast=False),
    "liger": dict(lengths="variable", packing=False, liger=True, bf16_cast=False),
    "bf16_cast": dict(lengths="variable", packing=False, liger=False, bf16_cast=True),
    "packed_liger_bf16": dict(lengths="variable", packing=True, liger=True, bf16_cast=True),
    # packed rows through torch's varlen FlashAttention kernel instead of SDPA with a block-diagonal mask
    "packed_varlen": dict(lengths="variable", packing=True, liger=False, bf16_cast=False, attention="varlen"),
    "packed_varlen_liger_bf16": dict(lengths="variable", packing=True, liger=True, bf16_cast=True, attention="varlen"),
}
WARMUP = 3


def lengths(kind: str, rows: int, seq: int, seed: int = 0) -> list[int]:
    import numpy as np

    if kind == "fixed":
        return [seq] * rows
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=np.log(600), sigma=0.9, size=rows), 128, seq).astype(int).tolist()


def model_flops_per_token(config, seq_mean: float) -> float:
    text = getattr(config, "text_config", config)
    d, layers = text.hidden_size, text.num_hidden_layers
    q = text.num_attention_heads * text.head_dim
    kv = text.num_key_value_heads * text.head_dim
    per_layer = d * (q + 2 * kv) + q * d + 3 * d * text.intermediate_size
    matrices = layers * per_layer + d * text.vocab_size
    attention = 12 * layers * seq_mean * q / 2
    return 6 * matrices + attention


def run_variant(model_dir: Path, name: str, steps: int, batch: int, seq: int) -> dict:
    import datasets
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from pipeline.attention import register_varlen_attention
    from pipeline.models import load_base, load_tokenizer, lora_target_regex

    variant = {"attention": "sdpa", **VARIANTS[name]}
    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_dir)
    model = load_base(model_dir)  # loads with sdpa
    if variant["attention"] == "varlen":
        model.set_attn_implementation(register_varlen_attention())
    model.config.use_cache = False  # with packed rows SDPA masks by position ids only without a cache
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    if variant["bf16_cast"]:
        from stages.train import cast_to_bf16

        cast_to_bf16(model)  # as the train stage does with train.bf16_cast
    vocab = model.config.get_text_config().vocab_size
    # packed variants need ~4x the documents to fill the same number of steps with real tokens
    row_lengths = lengths(variant["lengths"], batch * (steps + 1) * (4 if variant["packing"] else 1), seq)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(10, vocab, (n,), generator=generator).tolist() for n in row_lengths]
    data = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})
    if variant["packing"]:
        from trl import pack_dataset

        # as the tokenize stage packs: rows of `seq` tokens whose documents are kept apart by position ids
        data = pack_dataset(data, seq, strategy="bfd")

    class Timer(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    timer = Timer()
    config = SFTConfig(
        output_dir=f"/tmp/bench-{name}", max_steps=steps, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, learning_rate=2e-4, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, bf16=True,
        max_length=None if variant["packing"] else seq, padding_free=variant["packing"], packing=False,
        use_liger_kernel=variant["liger"], logging_steps=1, report_to="none",
        save_strategy="no", dataloader_num_workers=0, seed=0,
    )
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=lora_target_regex(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"]))
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora, callbacks=[timer])
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    timed_tokens = tokens[-1] - tokens[WARMUP - 1]
    seconds = timer.ends[-1] - timer.ends[WARMUP - 1]
    rate = timed_tokens / seconds
    mean_len = sum(row_lengths) / len(row_lengths)
    return {
        "variant": name, **variant, "batch": batch, "seq": seq, "steps_timed": steps - WARMUP,
        "real_tokens_per_second": round(rate, 1),
        "padding_share": round(1 - mean_len / max(row_lengths), 3) if not variant["packing"] else 0.0,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "mfu": round(rate * model_flops_per_token(model.config, mean_len) / PEAK_BF16_FLOPS, 4),
        "loss_first_last": [losses[0], losses[-1]],
        "seconds_per_step": round(seconds / (steps - WARMUP), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--name", default="throughput")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_variant(args.model, args.one, args.steps, args.batch, args.seq)))
        return

    import torch

    results = []
    for name in args.variants:
        command = [sys.executable, __file__, str(args.model), "--one", name, "--steps", str(args.steps),
                   "--batch", str(args.batch), "--seq", str(args.seq)]
        output = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        line = next((text for text in output.stdout.splitlines() if text.startswith("RESULT ")), None)
        if line is None:
            print(output.stdout[-2000:], output.stderr[-4000:])
            results.append({"variant": name, "error": output.stderr.strip().splitlines()[-1:]})
            continue
        results.append(json.loads(line[len("RESULT "):]))
    # each variant against the seed's configuration on the same kind of rows (fixed or variable lengths)
    seeds = {r["lengths"]: r for r in results if r["variant"].startswith("seed_") and "error" not in r}
    print(f"\n{'variant':<26}{'real tok/s':>12}{'peak GiB':>10}{'MFU':>8}{'x seed':>8}{'mem x':>7}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<26} error: {r['error']}")
            continue
        seed = seeds.get(r["lengths"])
        speed = r["real_tokens_per_second"] / seed["real_tokens_per_second"] if seed else float("nan")
        memory = r["peak_memory_gib"] / seed["peak_memory_gib"] if seed else float("nan")
        print(f"{r['variant']:<26}{r['real_tokens_per_second']:>12.0f}{r['peak_memory_gib']:>10.2f}"
              f"{r['mfu']:>8.3f}{speed:>8.2f}{memory:>7.2f}")
    out = {"card": torch.cuda.get_device_name(), "model": str(args.model), "torch": torch.__version__,
           "results": results}
    save(args.name, out)


if __name__ == "__main__":
    main()
