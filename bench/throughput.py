"""Training throughput of QLoRA configurations on one GPU: real (non-padding) tokens/s, peak memory, MFU.

    python bench/throughput.py MODEL_DIR --variants seed_variable default --steps 22 --warmup 2 --name NAME
    python bench/throughput.py MODEL_DIR --layers 62 ...   # grow a 6-layer checkpoint to 62 layers in memory

Each variant runs in a fresh process (clean peak-memory figures; compiled kernels and allocator state are
process-wide). Rows are random token ids: speed does not depend on the values. Fixed-length rows are all `seq`
tokens; variable-length rows draw lengths like web and Wikipedia documents (log-normal, median ~600 tokens,
clipped to 128..seq). Packed variants pack 2,000 such documents as the tokenize stage does (TRL's BFD) and take
shuffled rows; padded variants pad each batch to its longest row, as TRL's collator does.

Warm kernels: the trainer reads its batches in order (train_sampling_strategy "sequential"), so before the first
step every batch the run will see is known. A pre-pass runs forward and backward (no optimizer step, gradients
dropped) on every one of them through the model cut to its first layers of each attention type (every kernel
shape of the full depth occurs there: the layers are alike), then once at full depth on the largest; then
`--warmup` whole optimizer steps, then the timed ones. Step times are wall-clock intervals between the ends of
consecutive optimizer steps, after a device synchronisation. Reported: median, mean, spread; real tokens per
step from the batches actually fed (padding measured there); tokens/s both as mean tokens per step over the
median step time and as all tokens over all time.

MFU counts 6 x (parameters that multiply every token: the decoder's matrices and the LM head) per real token,
plus attention: 12 x query width per (query, key) pair each document's causal (or 1024-token sliding-window)
mask allows, summed over the documents of every step; against the card's dense bf16 peak (H100/H200 SXM:
989 TFLOP/s, datasheet). Gradient checkpointing's recomputation and the frozen weights' skipped gradients
are not counted either way.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import save  # noqa: E402

PEAK_BF16_FLOPS = 989e12
DEFAULT = dict(lengths="variable", packing=True, liger=True, bf16_cast=True, attention="varlen")
VARIANTS = {
    # the original plan's configuration: batch 4 x 2048, no packing, gradient checkpointing, SDPA
    "seed_fixed": dict(lengths="fixed", packing=False, liger=False, bf16_cast=False),
    "seed_variable": dict(lengths="variable", packing=False, liger=False, bf16_cast=False),
    # single levers on the variable-length data
    "packed": dict(lengths="variable", packing=True, liger=False, bf16_cast=False),
    "liger": dict(lengths="variable", packing=False, liger=True, bf16_cast=False),
    "bf16_cast": dict(lengths="variable", packing=False, liger=False, bf16_cast=True),
    "packed_liger_bf16": dict(lengths="variable", packing=True, liger=True, bf16_cast=True),
    "packed_varlen": dict(lengths="variable", packing=True, liger=False, bf16_cast=False, attention="varlen"),
    # the train stage's default path (params.yaml: tokenize.packing, train.attention varlen, liger, bf16_cast)
    "default": DEFAULT,
    "packed_varlen_liger_bf16": DEFAULT,
    # levers on top of the default
    "default_offload": dict(DEFAULT, offload="activations"),  # TRL activation_offloading (side stream)
    "default_checkpoint_offload": dict(DEFAULT, offload="checkpoints"),  # transformers: checkpoints to host
    "default_rows2": dict(DEFAULT, rows=2, accumulation=2),  # same tokens per optimizer step, half per pass
    "default_rows8": dict(DEFAULT, rows=8),  # twice the tokens per step
    "default_every2": dict(DEFAULT, every_n_layers=2),  # every other layer keeps its activations
    "default_rows2_every2": dict(DEFAULT, rows=2, accumulation=2, every_n_layers=2),
    # pipeline/fused_lora.py: each 4-bit projection and its adapter as one autograd function
    "default_offload_fused": dict(DEFAULT, offload="activations", fused_lora=True),
    "default_offload_fused_keep": dict(DEFAULT, offload="activations", fused_lora=True, keep_weight=True),
    "default_offload_fused_keep_rows8": dict(DEFAULT, offload="activations", fused_lora=True, keep_weight=True,
                                             rows=8),
    "default_offload_fused_keep_fp8": dict(DEFAULT, offload="activations", fused_lora=True, keep_weight=True,
                                           float8=True),  # pipeline/fp8.py: the 4-bit weight's products in e4m3
    "default_offload_fused_keep_nodropout": dict(DEFAULT, offload="activations", fused_lora=True, keep_weight=True,
                                                 lora_dropout=0.0),
}
DOCUMENTS_FOR_PACKING = 2000


def lengths(kind: str, rows: int, seq: int, seed: int = 0) -> list[int]:
    import numpy as np

    if kind == "fixed":
        return [seq] * rows
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(mean=np.log(600), sigma=0.9, size=rows), 128, seq).astype(int).tolist()


def matrix_parameters(config) -> int:
    """Parameters that multiply every token: each decoder layer's projections and the (tied) LM head."""
    text = config.get_text_config()
    d = text.hidden_size
    q = text.num_attention_heads * text.head_dim
    kv = text.num_key_value_heads * text.head_dim
    per_layer = d * (q + 2 * kv) + q * d + 3 * d * text.intermediate_size
    return text.num_hidden_layers * per_layer + d * text.vocab_size


def attention_pairs(length: int, window: int | None) -> int:
    """(query, key) pairs a causal mask allows in a document of `length` tokens; with a window, each query sees
    itself and the window - 1 keys before it."""
    if window is None or window >= length:
        return length * (length + 1) // 2
    return window * (window + 1) // 2 + (length - window) * window


def step_flops(config, documents: list[int]) -> float:
    text = config.get_text_config()
    q = text.num_attention_heads * text.head_dim
    attention = 0
    for kind in text.layer_types[: text.num_hidden_layers]:
        window = text.sliding_window if kind == "sliding_attention" else None
        attention += sum(attention_pairs(n, window) for n in documents)
    return 6 * matrix_parameters(config) * sum(documents) + 12 * q * attention


def batch_stats(batch) -> dict:
    """Shape, tokens fed, real tokens and document lengths of one collated batch (padded or padding-free)."""
    ids = batch["input_ids"]
    if "cu_seq_lens_q" in batch:  # padding-free: one flattened row, documents by cumulative lengths
        documents = batch["cu_seq_lens_q"].diff().tolist()
    elif "attention_mask" in batch:
        documents = batch["attention_mask"].sum(1).tolist()
    else:
        documents = [ids.shape[1]] * ids.shape[0]
    return {"shape": list(ids.shape), "tokens": ids.numel(), "real": int(sum(documents)), "documents": documents}


def make_data(variant: dict, micro_batches: int, rows: int, seq: int, vocab: int):
    import datasets
    import torch

    needed = micro_batches * rows
    count = max(DOCUMENTS_FOR_PACKING, 3 * needed) if variant["packing"] else needed
    row_lengths = lengths(variant["lengths"], count, seq)
    generator = torch.Generator().manual_seed(0)
    documents = [torch.randint(10, vocab, (n,), generator=generator).tolist() for n in row_lengths]
    data = datasets.Dataset.from_dict({"input_ids": documents, "labels": documents})
    if variant["packing"]:
        from trl import pack_dataset

        # as the tokenize stage packs: rows of `seq` tokens whose documents are kept apart by position ids;
        # the trainer's own sampler shuffles rows, here the order is fixed and shuffled once
        data = pack_dataset(data, seq, strategy="bfd").shuffle(seed=0)
    if len(data) < needed:
        raise SystemExit(f"{len(data)} rows for {needed} needed")
    return data.select(range(needed))


def run_variant(args, name: str) -> dict:
    import torch
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from bench.make_model import check_grown, decoder_layers, grow, text_model
    from pipeline.attention import register_varlen_attention
    from pipeline.models import load_base, load_tokenizer, lora_target_regex

    variant = {"attention": "sdpa", "rows": args.batch, "accumulation": 1, "offload": None, "every_n_layers": 1,
               "fused_lora": False, "keep_weight": False, "float8": False, "lora_dropout": 0.05, **VARIANTS[name]}
    cuda = torch.cuda.is_available()
    phases = {}
    started = time.perf_counter()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    model = load_base(args.model)  # loads with sdpa
    loaded = len(decoder_layers(model))
    built = None
    if args.layers and args.layers != loaded:
        grow(model, args.layers)
        built = check_grown(model, loaded)
    phases["load_s"] = round(time.perf_counter() - started, 1)
    if variant["attention"] == "varlen":
        model.set_attn_implementation(register_varlen_attention())
    model.config.use_cache = False  # with packed rows SDPA masks by position ids only without a cache
    if cuda:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if variant["bf16_cast"] and cuda:
        from stages.train import cast_to_bf16

        cast_to_bf16(model)  # as the train stage does with train.bf16_cast
    config = model.config
    micro_batches = args.steps * variant["accumulation"]
    data = make_data(variant, micro_batches, variant["rows"], args.seq, config.get_text_config().vocab_size)

    class Bench(TrainerCallback):
        """Pre-pass over every batch before the first step; wall-clock time at the end of every step."""

        def __init__(self):
            self.ends, self.fed, self.prepass = [], [], []
            self.trainer = None

        def on_train_begin(self, args_, state, control, model=None, **kwargs):
            t0 = time.perf_counter()
            trainer = self.trainer
            batches = list(trainer.get_train_dataloader())[:micro_batches]
            self.prepass = [batch_stats(b) for b in batches]
            decoder = text_model(trainer.accelerator.unwrap_model(trainer.model))
            phases["checkpointed_layers"] = sum(bool(getattr(layer, "gradient_checkpointing", False))
                                                for layer in decoder.layers)
            types = config.get_text_config().layer_types
            first = max(types.index(kind) for kind in set(types)) + 1
            full = decoder.layers
            decoder.layers = torch.nn.ModuleList(list(full)[:first])
            try:
                for batch in batches:
                    self.pass_(model, batch)
            finally:
                decoder.layers = full
            self.largest = max(batches, key=lambda b: b["input_ids"].numel())
            self.pass_(model, self.largest)
            model.zero_grad(set_to_none=True)
            for metrics in trainer._metrics.values():
                metrics.clear()
            trainer._total_train_tokens = 0
            self.sync()
            phases["prepass_s"] = round(time.perf_counter() - t0, 1)
            self.ends.append(time.perf_counter())

        def pass_(self, model, batch):
            trainer = self.trainer
            items = trainer._get_num_items_in_batch([batch], trainer.args.device)
            original_training_step(model, batch, items)

        def on_step_end(self, args_, state, control, **kwargs):
            self.sync()
            self.ends.append(time.perf_counter())

        @staticmethod
        def sync():
            if cuda:
                torch.cuda.synchronize()

    bench = Bench()
    # the Trainer takes every_n_layers and offload out of these before torch's checkpoint sees the rest
    checkpointing = {"use_reentrant": False}
    if variant["every_n_layers"] > 1:
        checkpointing["every_n_layers"] = variant["every_n_layers"]
    if variant["offload"] == "checkpoints":
        checkpointing["offload"] = True
    sft = SFTConfig(
        output_dir=f"/tmp/bench-{name}", max_steps=args.steps, per_device_train_batch_size=variant["rows"],
        gradient_accumulation_steps=variant["accumulation"], learning_rate=2e-4,
        gradient_checkpointing=True, gradient_checkpointing_kwargs=checkpointing,
        bf16=cuda, use_cpu=not cuda, max_length=None if variant["packing"] else args.seq,
        padding_free=variant["packing"], packing=False, use_liger_kernel=variant["liger"] and cuda,
        activation_offloading=variant["offload"] == "activations" and cuda, train_sampling_strategy="sequential",
        logging_steps=1, report_to="none", save_strategy="no", dataloader_num_workers=0, seed=0,
    )
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=variant["lora_dropout"], task_type="CAUSAL_LM",
                      target_modules=lora_target_regex(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"]))
    trainer = SFTTrainer(model=model, args=sft, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora, callbacks=[bench])
    bench.trainer = trainer
    if variant["fused_lora"]:
        from pipeline.fused_lora import fuse

        phases["fused_projections"] = fuse(trainer.model, keep_weight=variant["keep_weight"],
                                            float8=variant["float8"])
    original_training_step = trainer.training_step

    def training_step(model_, inputs, num_items_in_batch=None):
        bench.fed.append(list(inputs["input_ids"].shape))
        return original_training_step(model_, inputs, num_items_in_batch)

    trainer.training_step = training_step
    phases["setup_s"] = round(time.perf_counter() - started - phases["load_s"], 1)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    train_started = time.perf_counter()
    trainer.train()
    phases["train_s"] = round(time.perf_counter() - train_started, 1)
    if [b["shape"] for b in bench.prepass] != bench.fed:
        raise SystemExit("the pre-pass saw other batches than the trainer fed")

    accumulation = variant["accumulation"]
    steps = [bench.prepass[i * accumulation:(i + 1) * accumulation] for i in range(args.steps)]
    times = [b - a for a, b in zip(bench.ends, bench.ends[1:])]
    timed = list(range(args.warmup, args.steps))
    step_times = [times[i] for i in timed]
    real = [sum(b["real"] for b in steps[i]) for i in timed]
    fed = [sum(b["tokens"] for b in steps[i]) for i in timed]
    flops = [sum(step_flops(config, b["documents"]) for b in steps[i]) for i in timed]
    median = statistics.median(step_times)
    mean_real = statistics.fmean(real)
    rate_median = mean_real / median
    rate_mean = sum(real) / sum(step_times)
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    grad_norms = {e["step"]: e["grad_norm"] for e in trainer.state.log_history if "grad_norm" in e}
    result = {
        "variant": name, **variant, "layers": config.get_text_config().num_hidden_layers, "seq": args.seq,
        "steps": args.steps, "warmup_steps": args.warmup, "steps_timed": len(timed),
        "real_tokens_per_second": round(rate_median, 1),
        "real_tokens_per_second_mean": round(rate_mean, 1),
        "seconds_per_step_median": round(median, 4),
        "seconds_per_step_mean": round(statistics.fmean(step_times), 4),
        "seconds_per_step_min_max": [round(min(step_times), 4), round(max(step_times), 4)],
        "seconds_per_step_stdev": round(statistics.stdev(step_times), 4),
        "seconds_per_step": [round(t, 4) for t in times],
        "warmup_seconds_per_step": [round(times[i], 4) for i in range(args.warmup)],
        "real_tokens_per_step_mean": round(mean_real, 1),
        "tokens_fed_per_step_mean": round(statistics.fmean(fed), 1),
        "padding_share": round(1 - sum(real) / sum(fed), 4),
        "distinct_batch_shapes": len({tuple(b["shape"]) for b in bench.prepass}),
        "documents_per_step_mean": round(statistics.fmean(sum(len(b["documents"]) for b in steps[i])
                                                           for i in timed), 2),
        "mfu": round(statistics.fmean(flops) / median / PEAK_BF16_FLOPS, 4),
        "mfu_mean": round(sum(flops) / sum(step_times) / PEAK_BF16_FLOPS, 4),
        "model_flops_per_real_token": round(sum(flops) / sum(real)),
        "loss": [losses.get(i + 1) for i in range(args.steps)],
        "grad_norm": [grad_norms.get(i + 1) for i in range(args.steps)],
        "phases": phases,
    }
    if built:
        result["built"] = {k: v for k, v in built.items() if k != "signature_full_attention_layer"}
        result["layer_signature_full_attention"] = built["signature_full_attention_layer"]
    if cuda:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        result["resident_before_training_gib"] = round(resident / 2**30, 2)
        if args.probe:
            try:
                result["probe"] = probe(model, mean_real / accumulation)
            except Exception as failed:  # the training figures above stand without it
                result["probe"] = {"error": repr(failed)}
        if args.profile:
            try:
                result["profile"] = profile(lambda: bench.pass_(model, bench.largest))
            except Exception as failed:
                result["profile"] = {"error": repr(failed)}
    return result


def probe(model, tokens: float) -> dict:
    """Pieces of a step timed alone with CUDA events: a large bf16 matrix product (the card's real ceiling), one
    decoder layer's NF4 dequantisation, and its seven products in the forward layout (x @ W.T) at the step's
    tokens per pass. The step_* fields multiply these by 3 passes x layers: an estimate of their share, not a
    floor (the backward's products have other layouts and were not timed)."""
    import bitsandbytes.functional as bnbf
    import torch

    from bench.make_model import decoder_layers

    def timed(fn, repeats=20):
        fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / repeats / 1e3

    torch.manual_seed(0)
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    seconds = timed(lambda: a @ b)
    ceiling = 2 * n**3 / seconds
    del a, b
    layer = decoder_layers(model)[0]
    weights = [m.weight for m in layer.modules() if type(getattr(m, "weight", None)).__name__ == "Params4bit"]
    dequant = sum(timed(lambda w=w: bnbf.dequantize_4bit(w.data, w.quant_state)) for w in weights)
    rows = int(tokens)
    matmul = 0.0
    for w in weights:
        out_features, in_features = w.quant_state.shape
        x = torch.randn(rows, in_features, device="cuda", dtype=torch.bfloat16)
        dense = torch.randn(out_features, in_features, device="cuda", dtype=torch.bfloat16)
        matmul += timed(lambda x=x, dense=dense: x @ dense.t())
        del x, dense
    layers = len(decoder_layers(model))
    # a step makes three passes over every layer: forward, checkpoint recomputation, backward to the input (the
    # 4-bit weights get no gradient)
    return {"bf16_matmul_tflops_8192": round(ceiling / 1e12, 1),
            "tokens_per_pass": rows,
            "layer_dequant_ms": round(dequant * 1e3, 3), "layer_matmul_ms": round(matmul * 1e3, 3),
            "step_dequant_s": round(3 * layers * dequant, 3), "step_matmul_s": round(3 * layers * matmul, 3)}


KERNEL_KINDS = [  # kernel name patterns, first match wins
    ("dequantize", ("dequant",)),
    ("attention", ("sdpa", "flash", "fmha", "attention", "varlen")),  # cuDNN's names hold "sm90_" too
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "sm90_", "splitk")),
    ("copy", ("memcpy", "memset", "copy", "cat", "index")),
    ("triton", ("triton", "_kernel")),
    ("elementwise", ("elementwise", "vectorized", "reduce", "dropout", "fill", "mul", "add")),
]


def profile(step) -> dict:
    """One forward and backward of the largest batch (after the timed steps) under torch's profiler: kernel
    time by kind against the wall-clock time of the pass, and the kernels that took most."""
    import torch
    from torch.profiler import ProfilerActivity

    step()  # the profiler's first pass carries its own start-up
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    kernels = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] = kernels.get(event.name, 0.0) + event.time_range.elapsed_us() / 1e6
    kinds = {}
    for name, seconds in kernels.items():
        kind = next((k for k, patterns in KERNEL_KINDS if any(p in name.lower() for p in patterns)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    top = sorted(kernels.items(), key=lambda item: -item[1])[:30]
    return {"wall_s": round(wall, 3), "kernel_s": round(sum(kernels.values()), 3),
            "by_kind_s": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda item: -item[1])},
            "top_kernels_s": [[name[:120], round(seconds, 4)] for name, seconds in top]}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "trl", "peft", "bitsandbytes", "liger-kernel", "accelerate",
                    "datasets", "triton"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def card() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"name": "cpu"}
    info = {"name": torch.cuda.get_device_name(), "memory_gib": round(torch.cuda.mem_get_info()[1] / 2**30, 1),
            "cuda": torch.version.cuda}
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def shape(model_dir: Path, layers: int | None) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir).get_text_config()
    if layers:
        from bench.make_model import gemma3_layer_types

        config.num_hidden_layers, config.layer_types = layers, gemma3_layer_types(layers)
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
            "vocab_size", "sliding_window", "num_hidden_layers")
    out = {k: getattr(config, k) for k in keys}
    out["layer_types"] = {kind: config.layer_types.count(kind) for kind in set(config.layer_types)}
    out["matrix_parameters"] = matrix_parameters(config)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--variants", nargs="+", default=["seed_variable", "default"], choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=22, help="optimizer steps, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="whole steps after the pre-pass, not timed")
    parser.add_argument("--batch", type=int, default=4, help="rows per micro-batch (a variant may set its own)")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--layers", type=int, help="grow the checkpoint to this many decoder layers")
    parser.add_argument("--probe", action="store_true", help="also time a dequantisation and matrix products")
    parser.add_argument("--profile", action="store_true", help="also profile one pass after the timed steps")
    parser.add_argument("--deadline", type=float, help="seconds: start no variant that would end past it")
    parser.add_argument("--name", default="throughput")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args.steps - args.warmup < 2:
        parser.error("--steps must leave at least two timed steps after --warmup")
    if args.one:
        print("RESULT " + json.dumps(run_variant(args, args.one)), flush=True)
        return

    started = time.perf_counter()
    out = {"card": card(), "versions": versions(), "model": str(args.model), "layers": args.layers,
           "shape": shape(args.model, args.layers), "command": sys.argv[1:], "results": []}
    longest = 0.0
    for name in args.variants:
        left = args.deadline - (time.perf_counter() - started) if args.deadline else None
        if left is not None and left < max(longest * 1.1, 60):
            out["results"].append({"variant": name, "skipped": f"{left:.0f} s left before the deadline"})
            print(f"{name}: skipped, {left:.0f} s left", flush=True)
            continue
        command = [sys.executable, __file__, str(args.model), "--one", name, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq)]
        command += (["--layers", str(args.layers)] if args.layers else []) + (["--probe"] if args.probe else [])
        command += ["--profile"] if args.profile else []
        t0 = time.perf_counter()
        try:
            output = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=left,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
            stdout, stderr = output.stdout, output.stderr
        except subprocess.TimeoutExpired as stopped:
            stdout = (stopped.stdout or b"").decode() if isinstance(stopped.stdout, bytes) else stopped.stdout or ""
            stderr = "deadline reached\n"
        longest = max(longest, time.perf_counter() - t0)
        line = next((text for text in stdout.splitlines() if text.startswith("RESULT ")), None)
        if line is None:
            print(stdout[-3000:], stderr[-6000:], flush=True)
            out["results"].append({"variant": name, "error": stderr.strip().splitlines()[-1:]})
        else:
            result = json.loads(line[len("RESULT "):])
            result["process_s"] = round(time.perf_counter() - t0, 1)
            out["results"].append(result)
            print(f"{name}: {result['real_tokens_per_second']:.0f} real tokens/s, "
                  f"{result.get('peak_memory_gib')} GiB, {result['process_s']} s", flush=True)
        save(args.name, out)  # after every variant: a run stopped at its time limit keeps what it measured
    table(out["results"])


def table(results: list[dict]) -> None:
    """Each variant against the original plan's configuration on the same kind of rows (fixed or variable lengths)."""
    seeds = {r["lengths"]: r for r in results if r["variant"].startswith("seed_") and "mfu" in r}
    print(f"\n{'variant':<26}{'tok/s med':>10}{'tok/s mean':>11}{'s/step':>8}{'spread':>15}{'peak GiB':>9}"
          f"{'MFU':>7}{'x seed':>8}{'mem x':>7}")
    for r in results:
        if "mfu" not in r:
            print(f"{r['variant']:<26} {r.get('error') or r.get('skipped')}")
            continue
        seed = seeds.get(r["lengths"])
        speed = r["real_tokens_per_second"] / seed["real_tokens_per_second"] if seed else float("nan")
        memory = (r.get("peak_memory_gib") or float("nan")) / (seed.get("peak_memory_gib") or float("nan")) \
            if seed else float("nan")
        low, high = r["seconds_per_step_min_max"]
        print(f"{r['variant']:<26}{r['real_tokens_per_second']:>10.0f}{r['real_tokens_per_second_mean']:>11.0f}"
              f"{r['seconds_per_step_median']:>8.3f}{f'{low:.3f}-{high:.3f}':>15}"
              f"{r.get('peak_memory_gib') or float('nan'):>9.2f}{r['mfu']:>7.3f}{speed:>8.2f}{memory:>7.2f}")


if __name__ == "__main__":
    main()
