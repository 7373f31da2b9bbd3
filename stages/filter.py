"""filter: keep Turkish rows of good quality, drop duplicates, split train/validation deterministically.

Input: data/prepared/<source>/. Output: data/filtered/{train,validation}/part-*.parquet, reports/filter.json
(per source: read, kept, dropped per rule) and reports/data.md (the same as a table).

Work goes shard by shard: worker processes (one per core) judge each row on their own (language, quality
rules, decontamination, MinHash) and send the survivors back as Arrow tables; this process then checks them
against the dedup index in row order, so the output is deterministic, and writes them. Memory does not grow
with the corpus: the dedup index is a set of memory-mapped Bloom filters (pipeline.dedup) and at most two row
groups per worker are in flight; the evaluation n-grams for decontamination take 12 to 16 bytes each (a share of
the validation split). A killed run resumes after the last shard it completed.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.cpus import usable_cpus
from pipeline.decontaminate import Contamination, benchmark_texts, evaluation_files
from pipeline.dedup import Deduplicator, band_hashes, digest, index_bytes, minhash
from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.language import TurkishDetector
from pipeline.outputs import ROW_GROUP, ROWS, STATE, ShardWriter, code_digest, resumable_dir, write_json, write_text
from pipeline.params import Filter, Params
from pipeline.quality import failed_chat_rule, failed_rule, has_boilerplate
from pipeline.text import normalise
from pipeline.wordscan import scan

IN = Path("data/prepared")
OUT = Path("data/filtered")
REPORT = Path("reports/filter.json")
TABLE = Path("reports/data.md")
JUDGED_ROLES = ("user", "assistant")  # system prompts are instructions, often English by convention
log = logging.getLogger("filter")


def is_validation(row: dict, fraction: float) -> bool:
    digest_ = hashlib.sha1(f"{row['source']}\x1f{row['id']}".encode("utf-8")).digest()
    return int.from_bytes(digest_[:8], "big") / 2**64 < fraction


def normalised(row: dict) -> dict:
    if row["kind"] == "text":
        return {**row, "text": normalise(row["text"])}
    return {**row, "messages": [{**m, "content": normalise(m["content"])} for m in row["messages"]]}


def judged_texts(row: dict) -> list[str]:
    if row["kind"] == "text":
        return [row["text"]]
    return [m["content"] for m in row["messages"] if m["role"] in JUDGED_ROLES]


def dedup_text(row: dict) -> str:
    """What dedup and decontamination compare. A chat's system prompt is left out: it is shared boilerplate,
    and chats that share a long one are neither near duplicates nor contaminated by a validation chat with it."""
    return "\n".join(judged_texts(row))


@dataclass(frozen=True)
class Verdict:
    """What a worker decided about one row: the rule that dropped it, or what dedup needs to judge it."""

    drop: str | None
    split: str | None = None
    digest: bytes | None = None
    bands: np.ndarray | None = None


@dataclass(frozen=True)
class Judged:
    """A worker's verdicts on a batch of rows: each row's drop rule (None for a candidate) and, for the
    candidates in row order, their normalised rows as one Arrow table (the worker's cores build it, and it
    crosses to this process and into parquet without a Python object per row), splits, digests and band keys."""

    drops: list[str | None]
    candidates: pa.Table
    splits: list[str]
    digests: list[bytes]
    bands: np.ndarray  # candidates x LSH bands


def examine(rows: list[dict], rules: Filter, detector: TurkishDetector, contamination: Contamination,
            banding: tuple[int, int]) -> Judged:
    """Every check that needs no shared state, cheapest rejection first (most web text that fails, fails
    language ID, and the MinHash is only computed for rows that pass everything else). Language ID goes over
    all the rows before the other checks, so that lingua's model tables stay in the CPU cache between rows
    instead of alternating with the other checks' data."""
    rows = [normalised(row) for row in rows]
    turkish = [detector.all_turkish(judged_texts(row)) for row in rows]
    verdicts = [examine_turkish(row, rules, contamination, banding) if ok else Verdict("language")
                for row, ok in zip(rows, turkish)]
    candidates = [(row, verdict) for row, verdict in zip(rows, verdicts) if verdict.drop is None]
    return Judged(drops=[verdict.drop for verdict in verdicts],
                  candidates=pa.Table.from_pylist([row for row, _ in candidates], schema=ROWS),
                  splits=[verdict.split for _, verdict in candidates],
                  digests=[verdict.digest for _, verdict in candidates],
                  bands=np.stack([verdict.bands for _, verdict in candidates]) if candidates
                  else np.zeros((0, banding[0]), dtype=np.uint64))


def examine_turkish(row: dict, rules: Filter, contamination: Contamination, banding: tuple[int, int]) -> Verdict:
    # one pass over the words gives what the rules, decontamination and dedup need of them
    scanned = scan(dedup_text(row), rules.decontamination_ngram)
    if row["kind"] == "text":
        rule = failed_rule(row["text"], rules, scanned)
    else:
        rule = failed_chat_rule(row["messages"], rules)
    if rule:
        return Verdict(rule)
    split = "validation" if is_validation(row, rules.validation_fraction) else "train"
    if split == "train" and contamination.contaminated(scanned.ngrams):
        return Verdict("decontamination")
    signature = minhash(scanned.shingles, rules.minhash_permutations)
    return Verdict(None, split, digest(scanned.key), band_hashes(signature, *banding))


def keep(judged: Judged, dedup: Deduplicator, counts: Counter) -> dict[str, pa.Table]:
    """The candidates that pass dedup too, per split; each drop is counted under the rule that caused it."""
    counts.update(drop for drop in judged.drops if drop)
    chosen: dict[str, list[int]] = {"train": [], "validation": []}
    for i, split in enumerate(judged.splits):
        drop = dedup.check(judged.digests[i], judged.bands[i])
        if drop:
            counts[drop] += 1
        else:
            counts[f"kept_{split}"] += 1
            chosen[split].append(i)
    return {split: judged.candidates.take(pa.array(indices, type=pa.int64())) for split, indices in chosen.items()}


def filter_rows(rows: Iterable[dict], params: Params, detector: TurkishDetector, dedup: Deduplicator,
                contamination: Contamination, counts: Counter) -> Iterator[tuple[str, dict]]:
    """The whole filter on rows in this process (the stage spreads `examine` over worker processes): (split,
    row) for each kept row, a batch of rows at a time, train rows before validation rows within a batch."""
    banding = (dedup.bands, dedup.rows)
    rows = iter(rows)
    while batch := list(itertools.islice(rows, ROW_GROUP)):
        for split, table in keep(examine(batch, params.filter, detector, contamination, banding), dedup,
                                 counts).items():
            yield from ((split, row) for row in table.to_pylist())


# Set before the worker pool forks: workers share the language models and the evaluation n-grams instead of
# receiving them pickled with every task.
_WORKER: dict = {}


def examine_row_group(task: tuple[str, int]) -> Judged:
    path, group = task
    return examine(pq.ParquetFile(path).read_row_group(group).to_pylist(), **_WORKER)


def validation_texts(task: tuple[str, int, float]) -> list[str]:
    """What dedup compares of each row of one row group that the split sends to validation (in a worker). The
    texts, not their n-grams: the stage's process hashes them (1 % of the rows), so these workers need none of
    the compiled kernels."""
    path, group, fraction = task
    parquet = pq.ParquetFile(path)
    keys = parquet.read_row_group(group, columns=["source", "id"]).to_pylist()
    chosen = [i for i, key in enumerate(keys) if is_validation(key, fraction)]
    if not chosen:
        return []
    return [dedup_text(row) for row in parquet.read_row_group(group).take(chosen).to_pylist()]


def evaluation_ngrams(directories: list[Path], params: Params, pool=None, files=None) -> Contamination:
    """N-grams of every text that may be evaluated on: rows the split will send to validation (known before
    filtering, since the split is a function of source and id) and the local files the evaluate stage scores
    (`files`, from `evaluation_files` when not given). Finding the validation rows reads every row's id: on all
    cores, through `pool` when given. The files are read first: one that stops the stage does so before the
    scan starts (a pool stopped on an error finishes its tasks first: worker_pool)."""
    rules = params.filter
    contamination = Contamination(rules.decontamination_ngram)
    for path, param in evaluation_files(params) if files is None else files:
        for text in benchmark_texts(path, param):
            contamination.add(text)
    tasks = [(str(shard), group, rules.validation_fraction)
             for directory in directories for shard in sorted(directory.glob("*.parquet"))
             for group in range(pq.ParquetFile(shard).metadata.num_row_groups)]
    for texts in pool.imap(validation_texts, tasks) if pool else map(validation_texts, tasks):
        for text in texts:
            contamination.add(text)
    return contamination.freeze()


def source_dirs(params: Params) -> list[Path]:
    """The prepared sources, in params order: which duplicate survives is decided by the order the user wrote."""
    if not IN.is_dir():
        raise PipelineError(f"{IN}: missing; run the prepare stage first (dvc repro prepare)")
    order = {source.name: i for i, source in enumerate(params.data.sources)}
    return sorted((p for p in IN.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, len(order)), p.name))


@contextmanager
def worker_pool(workers: int) -> Iterator:
    """A fork pool that is closed and joined, also when the stage stops on an error: its tasks given out finish
    first (in_flight keeps those few). Pool's own exit, terminate, kills workers that may be sending a result,
    and a worker killed holding the result queue's lock leaves terminate waiting on it forever (a test that
    stops the stage mid-shard hung so, once, in a full test run)."""
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def in_flight(pool, tasks: list, window: int) -> Iterator[tuple[tuple, Judged]]:
    """Each task's row group's verdicts, in order, with at most `window` row groups given to the workers and
    not yet taken back. Bounded, unlike imap (workers running ahead of this process would pile a whole shard of
    judged rows up in memory), and without imap-per-window's stall (workers idle at every window's end while
    this process checks and writes its last row group)."""
    pending: deque = deque()
    for task in tasks:
        pending.append((task, pool.apply_async(examine_row_group, (task[:2],))))
        if len(pending) >= window:
            task, result = pending.popleft()
            yield task, result.get()
    while pending:
        task, result = pending.popleft()
        yield task, result.get()


def filter_shards(shards: list[tuple[int, Path]], pool, window: int, dedup: Deduplicator, work: Path,
                  params: Params, progress: tqdm) -> Iterator[tuple[int, Counter]]:
    """Filter prepared shards into work/{train,validation}/part-<index>-*.parquet, yielding each shard's index and
    counts once its rows are written. The workers' queue runs on across shards: while the caller commits a
    finished shard to the dedup index, they are already judging the next one's row groups (draining it at
    every shard's end left them idle there, a large share of the time on many cores)."""
    groups = {index: pq.ParquetFile(path).metadata.num_row_groups for index, path in shards}
    tasks = [(str(path), group, index) for index, path in shards for group in range(groups[index])]
    counts: Counter = Counter()
    writers: dict[str, ShardWriter] = {}
    for (_, group, index), judged in in_flight(pool, tasks, window):
        if not writers:
            writers = {split: ShardWriter(work / split, params.data.shard_rows, stem=f"part-{index:05d}",
                                          background=True) for split in ("train", "validation")}
        for split, table in keep(judged, dedup, counts).items():
            writers[split].add_table(table)
        progress.update(len(judged.drops))
        if group == groups[index] - 1:
            for writer in writers.values():
                writer.close()
            yield index, counts
            counts, writers = Counter(), {}


def run(params: Params) -> dict:
    rules = params.filter
    directories = source_dirs(params)
    shards = [(directory.name, shard) for directory in directories for shard in sorted(directory.glob("*.parquet"))]
    rows = {shard: pq.ParquetFile(shard).metadata.num_rows for _, shard in shards}
    inputs = sum(shard.stat().st_size for _, shard in shards)
    index = index_bytes(sum(rows.values()), rules.near_dedup_threshold, rules.minhash_permutations,
                        rules.dedup_false_positive_rate)
    require_free(OUT.parent, inputs + index, "filter (data/prepared)", partial=OUT)
    evaluation = evaluation_files(params)
    fingerprint = {"filter": rules.model_dump(), "data": params.data.model_dump(), "code": code_digest(__file__),
                   "inputs": [(str(s), s.stat().st_size, s.stat().st_mtime_ns)
                              for s in [shard for _, shard in shards] + [path for path, _ in evaluation]]}
    report = {"sources": {d.name: {"read": 0, "kept_train": 0, "kept_validation": 0, "dropped": Counter()}
                          for d in directories}, "decontamination": {}, "totals": {}}
    with resumable_dir(OUT, fingerprint) as work:
        state = work / STATE
        dedup = Deduplicator(rules.near_dedup_threshold, rules.minhash_permutations, sum(rows.values()),
                             state / "dedup", rules.dedup_false_positive_rate)
        workers = usable_cpus()
        # pyarrow imports pandas at its first conversion of Python objects (0.2 s of CPU): once here, not in
        # every worker the pools fork
        pa.array([])
        with worker_pool(workers) as pool:  # forked before the language models are loaded: it needs none
            contamination = evaluation_ngrams(directories, params, pool, evaluation)
        # numba loads its kernels at their first call (compiles them, the first time on a machine): here, once,
        # with the arguments the workers will give them, rather than in each worker
        scanned = scan("", rules.decontamination_ngram)
        has_boilerplate(scanned.key, rules.boilerplate_markers)
        contamination.contaminated(scanned.ngrams)
        report["decontamination"] = {"files": [str(path) for path, _ in evaluation],
                                     "evaluation_texts": contamination.texts,
                                     f"shorter_than_{rules.decontamination_ngram}_words": contamination.short}
        _WORKER.update(rules=rules, detector=TurkishDetector(rules), contamination=contamination,
                       banding=(dedup.bands, dedup.rows))

        def completed(index: int, source: str, shard: Path, done: dict) -> None:
            """A shard's rows are written: into the dedup index (idempotent, so again after a kill), and counted."""
            if not done["applied"]:
                dedup.apply(state / f"journal-{index:05d}.npz")
                write_json(state / f"done-{index:05d}.json", {**done, "applied": True})
            source_report = report["sources"][source]
            source_report["read"] += rows[shard]
            for name, count in done["counts"].items():
                if name.startswith("kept_"):
                    source_report[name] += count
                else:
                    source_report["dropped"][name] += count

        progress = tqdm(total=sum(rows.values()), desc="filter", unit=" rows", mininterval=5)
        todo = []
        for index, (source, shard) in enumerate(shards):
            marker = state / f"done-{index:05d}.json"
            if marker.is_file():  # completed before a kill (always the first shards): its rows are written
                completed(index, source, shard, json.loads(marker.read_text()))
                progress.update(rows[shard])
            else:
                for stale in work.glob(f"*/part-{index:05d}-*.parquet"):  # a shard cut off by a kill
                    stale.unlink()
                todo.append((index, shard))
        with worker_pool(workers) as pool:
            for index, counts in filter_shards(todo, pool, 2 * workers, dedup, work, params, progress):
                journal = state / f"journal-{index:05d}.npz"
                dedup.commit(journal.with_suffix(".tmp"))
                journal.with_suffix(".tmp").rename(journal)
                done = {"counts": dict(counts), "applied": False}
                write_json(state / f"done-{index:05d}.json", done)
                completed(index, *shards[index], done)
        progress.close()
        _WORKER.clear()
        for name, source_report in report["sources"].items():
            source_report["dropped"] = dict(sorted(source_report["dropped"].items()))
            log.info("%s: %s", name, source_report)
        totals = {split: sum(s[f"kept_{split}"] for s in report["sources"].values())
                  for split in ("train", "validation")}
        if totals["train"] == 0 or totals["validation"] == 0:
            raise PipelineError(
                f"filter kept {totals['train']} train and {totals['validation']} validation rows; loosen filter.* "
                "params or raise filter.validation_fraction"
            )
    report["totals"] = totals
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
    decontamination = report["decontamination"]
    short = next((count for key, count in decontamination.items() if key.startswith("shorter_than_")), 0)
    lines += ["", f"Decontaminated against {decontamination['evaluation_texts']} evaluation texts (the validation "
              f"split and {', '.join(decontamination['files']) or 'no local benchmark file'}); {short} of them are "
              "shorter than the n-gram and cannot be matched."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
