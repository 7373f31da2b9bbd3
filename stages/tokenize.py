"""tokenize: filtered rows to token ids and labels with the base model's tokenizer and chat template.

Texts become BOS + text + EOS, cut into `tokenize.max_seq_length` chunks; chats keep the loss on assistant
turns only (pipeline.chat) and are dropped, counted, when longer than max_seq_length or refused by the
template. Output: data/tokenized/{train,validation} (HF datasets on disk: input_ids, labels, length, source)
and reports/tokens.json.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from pipeline.chat import IGNORE, ChatError, encode_chat, encode_text
from pipeline.errors import PipelineError
from pipeline.models import load_tokenizer
from pipeline.outputs import atomic_dir, write_json
from pipeline.params import Params

IN = Path("data/filtered")
OUT = Path("data/tokenized")
REPORT = Path("reports/tokens.json")
SPLITS = ("train", "validation")
log = logging.getLogger("tokenize")


def encode_batch(batch: dict, tokenizer, max_length: int) -> dict:
    """One filtered row in, zero or more token rows out; `status` says why a row was dropped."""
    out = defaultdict(list)

    def emit(ids, labels, source, status="ok"):
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["source"].append(source)
        out["status"].append(status)

    for kind, text, messages, source in zip(batch["kind"], batch["text"], batch["messages"], batch["source"]):
        if kind == "text":
            for chunk in encode_text(tokenizer, text, max_length):
                emit(chunk, chunk, source)
            continue
        try:
            ids, labels = encode_chat(tokenizer, messages)
        except ChatError:
            emit([], [], source, "chat_template_error")
            continue
        if len(ids) > max_length:
            emit([], [], source, "chat_too_long")  # a cut chat would teach answers that stop mid-sentence
        else:
            emit(ids, labels, source)
    return dict(out)


def split_report(dataset) -> dict:
    report: dict = {}
    columns = dataset.select_columns(["source", "status", "length"]).to_pandas()
    for (source, status), group in columns.groupby(["source", "status"]):
        entry = report.setdefault(source, {"rows": 0, "tokens": 0, "dropped": {}})
        if status == "ok":
            entry["rows"] += len(group)
            entry["tokens"] += int(group["length"].sum())
        else:
            entry["dropped"][status] = len(group)
    return report


def run(params: Params) -> dict:
    import datasets

    datasets.disable_caching()
    tokenizer = load_tokenizer()
    max_length = params.tokenize.max_seq_length
    report = {"max_seq_length": max_length, "splits": {}}
    with tempfile.TemporaryDirectory(prefix="tokenize-cache-") as cache, atomic_dir(OUT) as out:
        for split in SPLITS:
            files = sorted(str(p) for p in (IN / split).glob("*.parquet"))
            if not files:
                raise PipelineError(f"{IN / split}: no parquet shards; run the filter stage first")
            rows = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
            # One process per 2,000 rows at most: below that, starting workers costs more than it saves.
            workers = min(os.cpu_count() or 1, len(rows) // 2000)
            tokens = rows.map(
                encode_batch,
                batched=True,
                batch_size=256,
                fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                remove_columns=rows.column_names,
                num_proc=workers if workers > 1 else None,
                new_fingerprint=f"tokenize-{split}",  # hashing a 262k-token tokenizer for a cache key takes seconds
                desc=f"tokenize {split}",
            )
            report["splits"][split] = split_report(tokens)
            kept = tokens.filter(lambda status: status == "ok", input_columns="status").remove_columns("status")
            if len(kept) == 0:
                raise PipelineError(f"tokenize: no {split} rows left (see {REPORT}); raise tokenize.max_seq_length")
            learned = sum(sum(label != IGNORE for label in labels) for labels in kept["labels"])
            report["splits"][split]["_total"] = {"rows": len(kept), "tokens": sum(kept["length"]), "learned": learned}
            kept.save_to_disk(str(out / split))
    write_json(REPORT, report)
    log.info("tokens: %s", {split: r["_total"] for split, r in report["splits"].items()})
    return report


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
