"""filter: keep Turkish rows of good quality, drop duplicates, split train/validation deterministically.

Input: data/prepared/<source>/. Output: data/filtered/{train,validation}/part-*.parquet, reports/filter.json
(per source: read, kept, dropped per rule) and reports/data.md (the same as a table).
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
from datasketch import MinHash
from tqdm import tqdm

from pipeline.decontaminate import Contamination, benchmark_texts, ngram_hashes
from pipeline.dedup import Deduplicator, minhash
from pipeline.errors import PipelineError
from pipeline.language import TurkishDetector
from pipeline.outputs import ShardWriter, atomic_dir, read_rows, write_json, write_text
from pipeline.params import Params
from pipeline.quality import failed_chat_rule, failed_rule
from pipeline.text import dedup_key, normalise

IN = Path("data/prepared")
OUT = Path("data/filtered")
REPORT = Path("reports/filter.json")
TABLE = Path("reports/data.md")
BATCH = 2048
JUDGED_ROLES = ("user", "assistant")  # system prompts are instructions, often English by convention
log = logging.getLogger("filter")


def is_validation(row: dict, fraction: float) -> bool:
    digest = hashlib.sha1(f"{row['source']}\x1f{row['id']}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def normalised(row: dict) -> dict:
    if row["kind"] == "text":
        return {**row, "text": normalise(row["text"])}
    return {**row, "messages": [{**m, "content": normalise(m["content"])} for m in row["messages"]]}


def judged_texts(row: dict) -> list[str]:
    if row["kind"] == "text":
        return [row["text"]]
    return [m["content"] for m in row["messages"] if m["role"] in JUDGED_ROLES]


def dedup_text(row: dict) -> str:
    if row["kind"] == "text":
        return row["text"]
    return "\n".join(m["content"] for m in row["messages"])


@dataclass
class Candidate:
    """One row with everything judged about it that needs no shared state (computed in worker processes)."""

    row: dict
    judged: list[str]
    failed_rule: str | None
    key: str
    signature: MinHash
    ngrams: set[int]


def examine(row: dict, rules) -> Candidate:
    row = normalised(row)
    if row["kind"] == "text":
        rule = failed_rule(row["text"], rules)
    else:
        rule = failed_chat_rule(row["messages"], rules)
    key = dedup_key(dedup_text(row))
    return Candidate(row, judged_texts(row), rule, key, minhash(key, rules.minhash_permutations),
                     ngram_hashes(key, rules.decontamination_ngram))


def filter_batch(rows: list[dict], params: Params, detector: TurkishDetector, dedup: Deduplicator,
                 contamination: Contamination, counts: Counter, pool=None):
    """Yield (split, row) for the rows that pass every check; count each drop under the rule that caused it.
    Per-row work runs in `pool` when given; language ID (lingua is multi-threaded itself) and the checks
    against shared state (dedup, contamination) run here, in row order, so the output is deterministic."""
    work = partial(examine, rules=params.filter)
    candidates = pool.map(work, rows, chunksize=16) if pool else [work(row) for row in rows]
    flat = detector.is_turkish([text for c in candidates for text in c.judged])
    position = 0
    for candidate in candidates:
        turkish = all(flat[position : position + len(candidate.judged)])
        position += len(candidate.judged)
        if not turkish:
            counts["language"] += 1
            continue
        if candidate.failed_rule:
            counts[candidate.failed_rule] += 1
            continue
        split = "validation" if is_validation(candidate.row, params.filter.validation_fraction) else "train"
        if split == "train" and contamination.contaminated(candidate.ngrams):
            counts["decontamination"] += 1
            continue
        duplicate = dedup.check(candidate.key, candidate.signature)
        if duplicate:
            counts[duplicate] += 1
            continue
        yield split, candidate.row


def evaluation_ngrams(directories: list[Path], params: Params) -> Contamination:
    """N-grams of every text that may be evaluated on: rows the split will send to validation (known before
    filtering, since the split is a function of source and id) and the local benchmark files."""
    rules = params.filter
    contamination = Contamination(rules.decontamination_ngram)
    for path in rules.decontamination_files:
        for text in benchmark_texts(Path(path)):
            contamination.add(text)
    for directory in directories:
        for shard in sorted(directory.glob("*.parquet")):
            keys = pq.read_table(shard, columns=["source", "id"]).to_pylist()
            chosen = [i for i, key in enumerate(keys) if is_validation(key, rules.validation_fraction)]
            if chosen:
                for row in pq.read_table(shard).take(chosen).to_pylist():
                    contamination.add(dedup_text(normalised(row)))
    return contamination


def source_dirs() -> list[Path]:
    if not IN.is_dir():
        raise PipelineError(f"{IN}: missing; run the prepare stage first (dvc repro prepare)")
    return sorted(p for p in IN.iterdir() if p.is_dir())


def run(params: Params) -> dict:
    rules = params.filter
    detector = TurkishDetector(rules.language_detector, rules.candidate_languages, rules.min_turkish_confidence)
    dedup = Deduplicator(rules.near_dedup_threshold, rules.minhash_permutations)
    order = {source.name: i for i, source in enumerate(params.data.sources)}
    # Sources in params order, so that which duplicate survives is decided by the order the user wrote.
    directories = sorted(source_dirs(), key=lambda p: order.get(p.name, len(order)))
    contamination = evaluation_ngrams(directories, params)
    report = {"sources": {}, "totals": {}}
    with atomic_dir(OUT) as out, multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        train = ShardWriter(out / "train", params.data.shard_rows)
        validation = ShardWriter(out / "validation", params.data.shard_rows)
        for directory in directories:
            total = sum(pq.ParquetFile(p).metadata.num_rows for p in directory.glob("*.parquet"))
            counts: Counter = Counter()
            batch: list[dict] = []
            progress = tqdm(total=total, desc=f"filter {directory.name}", unit=" rows", mininterval=5)

            def flush() -> None:
                for split, row in filter_batch(batch, params, detector, dedup, contamination, counts, pool):
                    (validation if split == "validation" else train).add(row)
                    counts[f"kept_{split}"] += 1
                progress.update(len(batch))
                batch.clear()

            for row in read_rows(directory):
                batch.append(row)
                if len(batch) == BATCH:
                    flush()
            flush()
            progress.close()
            dropped = {k: v for k, v in sorted(counts.items()) if not k.startswith("kept_")}
            report["sources"][directory.name] = {
                "read": total,
                "kept_train": counts["kept_train"],
                "kept_validation": counts["kept_validation"],
                "dropped": dropped,
            }
            log.info("%s: %s", directory.name, report["sources"][directory.name])
        train.close()
        validation.close()
        if train.rows == 0 or validation.rows == 0:
            raise PipelineError(
                f"filter kept {train.rows} train and {validation.rows} validation rows; loosen filter.* params "
                "or raise filter.validation_fraction"
            )
    report["totals"] = {"train": train.rows, "validation": validation.rows}
    write_json(REPORT, report)
    write_text(TABLE, data_table(report))
    return report


def data_table(report: dict) -> str:
    rules = sorted({rule for source in report["sources"].values() for rule in source["dropped"]})
    header = ["source", "read", "train", "validation", *rules]
    lines = ["# Filtered data", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, source in report["sources"].items():
        cells = [name, source["read"], source["kept_train"], source["kept_validation"]]
        cells += [source["dropped"].get(rule, 0) for rule in rules]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
