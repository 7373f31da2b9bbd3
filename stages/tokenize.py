"""tokenize: filtered rows to token ids and labels with the base model's tokenizer and chat template.

Texts become BOS + text + EOS, cut into `tokenize.max_seq_length` chunks; chats keep the loss on assistant
turns only (pipeline.chat) and are dropped, counted, when longer than max_seq_length or refused by the
template. Each source's train rows are then cut to the tokens the plan gives it (data/plan/<source>.json; rows
drawn in a seeded order), so the mix and the cost are the plan's; a source that gave fewer tokens than planned
(the filter kept fewer rows than its `survival` said) is reported, with the survival to set. With
`tokenize.packing` the train split is packed best-fit-decreasing into rows of max_seq_length whose
`seq_lengths` keep the documents apart (TRL turns them into position ids).
Output: data/tokenized/{train,validation} (HF datasets on disk: input_ids, labels, length, source, kind) and
reports/tokens.json.
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections import defaultdict

import pyarrow.parquet as pq

from pipeline.chat import IGNORE, ChatError, encode_chat, encode_text
from pipeline.cpus import usable_cpus
from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.models import load_tokenizer
from pipeline import paths
from pipeline.atomic import atomic_dir, write_json
from pipeline.params import Params

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


SHORTFALL = 0.9  # a source that gives less of its planned tokens than this is reported: its plan figures are off


def planned_tokens(sources: list[str]) -> dict[str, int]:
    tokens = {}
    for source in sources:
        plan = paths.plan_file(source)
        if not plan.is_file():
            raise PipelineError(f"{plan}: missing; run the plan stage first (dvc repro plan)")
        tokens[source] = json.loads(plan.read_text())["train_tokens"]
    return tokens


def within_plan(dataset, seed: int, report: dict):
    """The train rows within each source's planned tokens, drawn in a seeded order (the same rows every run);
    a source with fewer tokens than planned gives all it has, and its shortfall is reported."""
    columns = dataset.select_columns(["source", "length"]).to_pandas()
    planned = planned_tokens(sorted(columns["source"].unique()))
    chosen = []
    for name, group in columns.groupby("source", sort=True):
        order = group.sample(frac=1.0, random_state=seed)
        within = order[order["length"].cumsum() <= planned[name]]
        chosen += within.index.tolist()
        available = int(group["length"].sum())
        report[name]["plan"] = {"planned_tokens": planned[name], "available_tokens": available,
                                "kept_tokens": int(within["length"].sum()), "kept_rows": len(within),
                                "share_of_plan": round(available / max(planned[name], 1), 3)}
        if available < SHORTFALL * planned[name]:
            log.warning("%s gave %d train tokens of the %d planned (%.0f %%): the filter kept fewer rows than "
                        "data.sources.%s.survival says; lower it (reports/filter.json has the share kept) and "
                        "run again to read more", name, available, planned[name], 100 * available / planned[name],
                        name)
    return dataset.select(sorted(chosen))


# A token is ~3.5 bytes of Turkish text, stored as an input id and a label of 8 bytes each: ~5 bytes a byte.
OUTPUT_BYTES_PER_TEXT_BYTE = 5
TOKEN_BYTES = 16


def expected_bytes() -> float:
    """Disk tokenizing data/filtered takes beside data/: its uncompressed size (parquet footers) in tokens, once
    in the datasets cache and once as the output, which the plan's tokens may cap."""
    text = 0
    for path in paths.FILTERED.rglob("*.parquet"):
        metadata = pq.ParquetFile(path).metadata
        text += sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    everything = text * OUTPUT_BYTES_PER_TEXT_BYTE
    planned = sum(json.loads(p.read_text())["train_tokens"] for p in paths.PLAN.glob("*.json")
                  if p.name != "sources.json")
    return everything + min(everything, planned * TOKEN_BYTES)


def run(params: Params) -> dict:
    import datasets
    from trl import pack_dataset

    datasets.disable_caching()
    tokenizer = load_tokenizer()
    max_length = params.tokenize.max_seq_length
    report = {"max_seq_length": max_length, "splits": {}}
    require_free(paths.TOKENIZED.parent, expected_bytes(), "tokenize (data/filtered)")
    # the datasets cache beside the output, on the disk the preflight checked (a pod's /tmp is often small)
    paths.TOKENIZED.parent.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory(prefix=".tokenize-cache-", dir=paths.TOKENIZED.parent) as cache,
          atomic_dir(paths.TOKENIZED) as out):
        for split in SPLITS:
            files = sorted(str(p) for p in (paths.FILTERED / split).glob("*.parquet"))
            if not files:
                raise PipelineError(f"{paths.FILTERED / split}: no parquet shards; run the filter stage first")
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
                kept = within_plan(kept, params.tokenize.seed, report["splits"][split])
            if len(kept) == 0:
                raise PipelineError(f"tokenize: no {split} rows left (see {paths.TOKENS_REPORT}); "
                                    "raise tokenize.max_seq_length")
            learned = sum(sum(label != IGNORE for label in labels) for labels in kept["labels"])
            report["splits"][split]["_total"] = {"rows": len(kept), "tokens": sum(kept["length"]), "learned": learned}
            if split == "train" and params.tokenize.packing:
                # Only train: evaluation scores documents one by one.
                kept = pack_dataset(kept.select_columns(["input_ids", "labels"]), max_length, strategy="bfd")
                report["splits"][split]["_total"]["packed_rows"] = len(kept)
            kept.save_to_disk(str(out / split))
    write_json(paths.TOKENS_REPORT, report)
    log.info("tokens: %s", {split: r["_total"] for split, r in report["splits"].items()})
    return report


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
