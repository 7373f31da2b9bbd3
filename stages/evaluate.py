"""evaluate: is the tuned model better at Turkish than the base? Held-out loss and perplexity, base vs tuned.

Input: data/tokenized/validation, models/base, models/adapter. Output: reports/eval.json (base, tuned, delta).
The base and tuned figures come from one loaded model, with the adapter switched off and on.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.chat import IGNORE
from pipeline.errors import PipelineError
from pipeline.models import load_base
from pipeline.outputs import write_json
from pipeline.params import Params

DATA = Path("data/tokenized/validation")
ADAPTER = Path("models/adapter")
REPORT = Path("reports/eval.json")
log = logging.getLogger("evaluate")


@torch.no_grad()
def held_out_loss(model, rows, batch_size: int, pad_id: int, label: str) -> dict:
    """Mean cross-entropy per learned token over `rows` (dicts with input_ids and labels)."""
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    # Longest first: batches of similar length waste little on padding.
    rows = sorted(rows, key=lambda r: -len(r["input_ids"]))
    for start in tqdm(range(0, len(rows), batch_size), desc=f"evaluate {label}", unit=" batches"):
        batch = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            n = len(row["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(row["input_ids"]), torch.tensor(row["labels"]), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        targets = labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += int((targets != IGNORE).sum())
    loss = total_nll / max(total_tokens, 1)
    return {"loss": round(loss, 5), "perplexity": round(math.exp(loss), 4), "tokens": total_tokens}


def run(params: Params) -> dict:
    from datasets import load_from_disk
    from peft import PeftModel

    for path in (DATA, ADAPTER):
        if not path.exists():
            raise PipelineError(f"{path}: missing; run the stages before evaluate (dvc repro)")
    rows = load_from_disk(str(DATA))
    if params.evaluate.max_rows:
        rows = rows.select(range(min(params.evaluate.max_rows, len(rows))))
    rows = rows.select_columns(["input_ids", "labels"]).to_list()
    base = load_base()
    model = PeftModel.from_pretrained(base, str(ADAPTER)).eval()
    pad_id = base.config.pad_token_id or 0
    with model.disable_adapter():
        base_scores = held_out_loss(model, rows, params.evaluate.batch_size, pad_id, "base")
    tuned_scores = held_out_loss(model, rows, params.evaluate.batch_size, pad_id, "tuned")
    report = {
        "validation": {
            "base": base_scores,
            "tuned": tuned_scores,
            "delta": {key: round(tuned_scores[key] - base_scores[key], 5) for key in ("loss", "perplexity")},
        }
    }
    write_json(REPORT, report)
    log.info("perplexity base %.3f -> tuned %.3f", base_scores["perplexity"], tuned_scores["perplexity"])
    return report


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
