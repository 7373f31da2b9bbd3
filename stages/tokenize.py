"""tokenize: filtered rows to token ids and labels with the base model's tokenizer and chat template.

Texts become BOS + text + EOS, cut into `tokenize.max_seq_length` chunks; chats keep the loss on assistant
turns only (pipeline.chat) and are dropped, counted, when longer than max_seq_length or refused by the
template. The train split is then cut to `tokenize.max_train_tokens` (each source's share set by its
`weight`, rows drawn in a seeded order) and, with `tokenize.packing`, packed best-fit-decreasing into rows of
max_seq_length whose `seq_lengths` keep the documents apart (TRL turns them into position ids).
Output: data/tokenized/{train,validation} (HF datasets on disk: input_ids, labels, length, source, kind) and
reports/tokens.json, with what training on them will cost (params `hardware`).
"""
from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.chat import IGNORE, ChatError, encode_chat, encode_text
from pipeline.cpus import usable_cpus
from pipeline.disk import require_free
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

    def emit(ids, labels, source, kind, status="ok"):
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["length"].append(len(ids))
        out["source"].append(source)
        out["kind"].append(kind)
        out["status"].append(status)

    for kind, text, messages, source in zip(batch["kind"], batch["text"], batch["messages"], batch["source"]):
        if kind == "text":
            for chunk in encode_text(tokenizer, text, max_length):
                emit(chunk, chunk, source, kind)
            continue
        try:
            ids, labels = encode_chat(tokenizer, messages)
        except ChatError:
            emit([], [], source, kind, "chat_template_error")
            continue
        if len(ids) > max_length:
            emit([], [], source, kind, "chat_too_long")  # a cut chat would teach answers that stop mid-sentence
        else:
            emit(ids, labels, source, kind)
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


def budget(dataset, params: Params, report: dict):
    """Rows of the train split within tokenize.max_train_tokens, each source's share by its weight;
    a source with fewer tokens than its share gives all it has. Deterministic: a seeded order per source."""
    limit = params.tokenize.max_train_tokens
    if limit is None:
        return dataset
    weights = {s.name: s.weight for s in params.data.sources}
    columns = dataset.select_columns(["source", "length"]).to_pandas()
    total_weight = sum(weights.get(name, 1.0) for name in columns["source"].unique())
    chosen = []
    for name, group in columns.groupby("source", sort=True):
        share = limit * weights.get(name, 1.0) / total_weight
        order = group.sample(frac=1.0, random_state=params.tokenize.seed)
        within = order[order["length"].cumsum() <= share]
        chosen += within.index.tolist()
        report[name]["budget"] = {"share_tokens": int(share), "rows": len(within),
                                  "tokens": int(within["length"].sum())}
    return dataset.select(sorted(chosen))


def cost(tokens: int, params: Params) -> dict:
    """GPU hours and USD for the configured epochs (one epoch when train.max_steps decides) at the measured
    throughput."""
    hardware = params.hardware
    epochs = params.train.num_train_epochs if params.train.max_steps <= 0 else None
    hours = tokens * (epochs or 1) / (hardware.tokens_per_second * hardware.gpus) / 3600
    return {
        "train_tokens_per_epoch": tokens,
        "epochs": epochs if epochs is not None else "train.max_steps decides; figures are per epoch",
        "tokens_per_second_per_gpu": hardware.tokens_per_second,
        "gpus": hardware.gpus,
        "gpu_hours": round(hours * hardware.gpus, 2),
        "wall_hours": round(hours, 2),
        "usd": round(hours * hardware.usd_per_hour, 2),
        "note": "real (non-padding) tokens at the measured rate of bench/; unpacked variable-length rows run slower",
    }


# A token is ~3.5 bytes of Turkish text, stored as an input id and a label of 8 bytes each: ~5 bytes a byte.
OUTPUT_BYTES_PER_TEXT_BYTE = 5
TOKEN_BYTES = 16


def expected_bytes(params: Params) -> float:
    """Disk tokenizing data/filtered takes beside data/: its uncompressed size (parquet footers) in tokens, once
    in the datasets cache and once as the output, which `tokenize.max_train_tokens` may cap."""
    text = 0
    for path in IN.rglob("*.parquet"):
        metadata = pq.ParquetFile(path).metadata
        text += sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    everything = text * OUTPUT_BYTES_PER_TEXT_BYTE
    budget = params.tokenize.max_train_tokens
    return everything + (min(everything, budget * TOKEN_BYTES) if budget else everything)


def run(params: Params) -> dict:
    import datasets
    from trl import pack_dataset

    datasets.disable_caching()
    tokenizer = load_tokenizer()
    max_length = params.tokenize.max_seq_length
    report = {"max_seq_length": max_length, "splits": {}}
    require_free(OUT.parent, expected_bytes(params), "tokenize (data/filtered)")
    # the datasets cache beside the output, on the disk the preflight checked (a pod's /tmp is often small)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tokenize-cache-", dir=OUT.parent) as cache, atomic_dir(OUT) as out:
        for split in SPLITS:
            files = sorted(str(p) for p in (IN / split).glob("*.parquet"))
            if not files:
                raise PipelineError(f"{IN / split}: no parquet shards; run the filter stage first")
            rows = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
            # One process per 2,000 rows at most: below that, starting workers costs more than it saves.
            workers = min(usable_cpus(), len(rows) // 2000)
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
            if split == "train":
                kept = budget(kept, params, report["splits"][split])
            if len(kept) == 0:
                raise PipelineError(f"tokenize: no {split} rows left (see {REPORT}); raise tokenize.max_seq_length")
            learned = sum(sum(label != IGNORE for label in labels) for labels in kept["labels"])
            report["splits"][split]["_total"] = {"rows": len(kept), "tokens": sum(kept["length"]), "learned": learned}
            if split == "train" and params.tokenize.packing:
                # Only train: evaluation scores documents one by one.
                kept = pack_dataset(kept.select_columns(["input_ids", "labels"]), max_length, strategy="bfd")
                report["splits"][split]["_total"]["packed_rows"] = len(kept)
            kept.save_to_disk(str(out / split))
    report["cost"] = cost(report["splits"]["train"]["_total"]["tokens"], params)
    write_json(REPORT, report)
    log.info("cost: %s", report["cost"])
    log.info("tokens: %s", {split: r["_total"] for split, r in report["splits"].items()})
    return report


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
