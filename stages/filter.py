"""filter: keep Turkish rows of good quality, drop duplicates, split train/validation deterministically.

Input: data/prepared/<source>/ (sources in data/plan/sources.json's order: the first copy of a duplicate is kept).
Output: data/filtered/{train,validation}/part-*.parquet, reports/filter.json (per source: read, kept, dropped per
rule, languages thrown away), reports/data.md (the same as a table) and reports/metrics/filter.json (keep rates).

plan (the input shards, the disk they need) -> index (the dedup index, the evaluation n-grams, the judge) ->
shards (workers judge rows: pipeline.judge; this process checks the survivors against the dedup index in row
order, so the output is deterministic, and writes them) -> report. Memory does not grow with the corpus: the
dedup index lives in memory-mapped files (pipeline.dedup) and a bounded number of row groups is in flight. A
killed run resumes after the last shard it completed (pipeline.journal).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import paths
from pipeline.closure import code_digest
from pipeline.cpus import usable_cpus
from pipeline.decontaminate import Contamination
from pipeline.dedup import Deduplicator, index_bytes
from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.eval_sets import benchmark_texts, evaluation_files
from pipeline.journal import Journal
from pipeline.judge import Judge, Judged, dedup_text, is_validation, judge_rows
from pipeline.language import TurkishDetector
from pipeline.params import Filter, Params
from pipeline.quality import has_boilerplate
from pipeline.shards import ROW_GROUP, ShardWriter
from pipeline.atomic import write_json, write_text
from pipeline.wordscan import scan
from pipeline.workers import WorkerPool

SPLITS = ("train", "validation")
log = logging.getLogger("filter")


# plan ------------------------------------------------------------------------------------------------------------

def source_order() -> list[str]:
    """The sources in params order (written by the plan stage): which copy of a duplicate survives."""
    order = paths.PLAN / "sources.json"
    if not order.is_file():
        raise PipelineError(f"{order}: missing; run the plan and prepare stages first (dvc repro prepare)")
    return json.loads(order.read_text())["order"]


def input_shards(sources: list[str]) -> list[tuple[str, Path, int]]:
    """(source, shard, rows) of every prepared shard, sources in order."""
    shards = []
    for source in sources:
        directory = paths.prepared(source)
        if not directory.is_dir():
            raise PipelineError(f"{directory}: missing; run the prepare stage first (dvc repro prepare@{source})")
        shards += [(source, shard, pq.ParquetFile(shard).metadata.num_rows)
                   for shard in sorted(directory.glob("*.parquet"))]
    return shards


# index -----------------------------------------------------------------------------------------------------------

def validation_texts(fraction: float, task: tuple[str, int]) -> list[str]:
    """What dedup compares of each row of one row group that the split sends to validation (in a worker). The
    texts, not their n-grams: the stage's process hashes them (a small share of the rows)."""
    path, group = task
    parquet = pq.ParquetFile(path)
    keys = parquet.read_row_group(group, columns=["source", "id"]).to_pylist()
    chosen = [i for i, key in enumerate(keys) if is_validation(key, fraction)]
    if not chosen:
        return []
    return [dedup_text(row) for row in parquet.read_row_group(group).take(chosen).to_pylist()]


def evaluation_ngrams(shards: list[Path], rules: Filter, files: list[tuple[Path, str]],
                      workers: int = 1) -> Contamination:
    """N-grams of every text that may be evaluated on: the local files the evaluate stage scores (read first, so
    a bad one stops the stage before the scan) and the rows the split will send to validation (known before
    filtering, since the split is a function of source and id; finding them reads every row's id, on all cores)."""
    contamination = Contamination(rules.decontamination_ngram)
    for path, param in files:
        for text in benchmark_texts(path, param):
            contamination.add(text)
    tasks = [(str(shard), group) for shard in shards for group in range(pq.ParquetFile(shard).metadata.num_row_groups)]
    with WorkerPool(validation_texts, rules.validation_fraction, workers, per_worker=4) as pool:
        for texts in pool.map(tasks):
            for text in texts:
                contamination.add(text)
    return contamination.freeze()


def warm_kernels(rules: Filter, contamination: Contamination) -> None:
    """numba loads its kernels at their first call (and compiles them, the first time on a machine): here, once,
    with the arguments the workers will give them, rather than in each worker after the fork."""
    scanned = scan("", rules.decontamination_ngram)
    has_boilerplate(scanned.key, rules.boilerplate_markers)
    contamination.contaminated(scanned.ngrams)


# shards ----------------------------------------------------------------------------------------------------------

def judge_row_group(judge: Judge, task: tuple[str, int]) -> Judged:
    path, group = task
    return judge_rows(pq.ParquetFile(path).read_row_group(group).to_pylist(), judge)


def keep(judged: Judged, dedup: Deduplicator, counts: Counter, languages: Counter) -> dict[str, pa.Table]:
    """The candidates that pass dedup too, per split; each drop counted under its rule, language drops also
    under the language seen."""
    counts.update(drop for drop in judged.drops if drop)
    languages.update(language for language in judged.languages if language)
    chosen: dict[str, list[int]] = {split: [] for split in SPLITS}
    for i, split in enumerate(judged.splits):
        drop = dedup.check_and_add(judged.digests[i], judged.sketch(i))
        if drop:
            counts[drop] += 1
        else:
            counts[f"kept_{split}"] += 1
            chosen[split].append(i)
    return {split: judged.candidates.take(pa.array(indices, type=pa.int64())) for split, indices in chosen.items()}


def filter_rows(rows: Iterable[dict], judge: Judge, dedup: Deduplicator, counts: Counter,
                languages: Counter) -> Iterator[tuple[str, dict]]:
    """The filter in this process, a batch of rows at a time: (split, row) for each kept row, train rows before
    validation rows within a batch. The stage runs the same judge and keep over worker processes."""
    rows = iter(rows)
    while batch := [row for _, row in zip(range(ROW_GROUP), rows)]:
        for split, table in keep(judge_rows(batch, judge), dedup, counts, languages).items():
            yield from ((split, row) for row in table.to_pylist())


def filter_shards(todo: list[int], shards: list[tuple[str, Path, int]], pool: WorkerPool, dedup: Deduplicator,
                  work: Path, shard_rows: int, progress: tqdm) -> Iterator[tuple[int, Counter, Counter]]:
    """Filter the input shards `todo` into work/{train,validation}/part-<index>-*.parquet, yielding each shard's
    index and counts once its rows are written. The workers' queue runs on across shards: while the caller
    commits a finished shard to the dedup index, they are already judging the next one's row groups."""
    groups = {index: pq.ParquetFile(shards[index][1]).metadata.num_row_groups for index in todo}
    tasks = [(index, group) for index in todo for group in range(groups[index])]
    counts, languages, writers = Counter(), Counter(), {}
    for (index, group), judged in zip(tasks, pool.map((str(shards[i][1]), g) for i, g in tasks)):
        if not writers:
            writers = {split: ShardWriter(work / split, shard_rows, stem=f"part-{index:05d}", background=True)
                       for split in SPLITS}
        for split, table in keep(judged, dedup, counts, languages).items():
            writers[split].add_table(table)
        progress.update(len(judged.drops))
        if group == groups[index] - 1:
            for writer in writers.values():
                writer.close()
            yield index, counts, languages
            counts, languages, writers = Counter(), Counter(), {}


def run(params: Params) -> dict:
    rules = params.filter
    # plan
    sources = source_order()
    shards = input_shards(sources)
    total_rows = sum(rows for _, _, rows in shards)
    evaluation = evaluation_files(params)
    index_size = index_bytes(total_rows, rules.minhash_permutations, rules.minhash_bands)
    require_free(paths.FILTERED.parent, sum(shard.stat().st_size for _, shard, _ in shards) + index_size,
                 "filter (data/prepared)", partial=paths.FILTERED)
    fingerprint = {"filter": rules.model_dump(), "shard_rows": params.data.shard_rows, "code": code_digest(__file__),
                   "inputs": [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
                              for p in [shard for _, shard, _ in shards] + [path for path, _ in evaluation]]}
    report = {"sources": {s: {"read": 0, "kept_train": 0, "kept_validation": 0, "dropped": Counter(),
                              "languages_dropped": Counter()} for s in sources}}
    workers = usable_cpus()
    with Journal(paths.FILTERED, fingerprint) as journal:
        # index
        dedup = Deduplicator(journal.state / "dedup", total_rows, rules.minhash_permutations, rules.minhash_bands,
                             rules.minhash_rows, rules.near_dedup_threshold)
        pa.array([])  # pyarrow imports pandas at its first conversion (0.2 s of CPU): once here, not per worker
        contamination = evaluation_ngrams([shard for _, shard, _ in shards], rules, evaluation, workers)
        warm_kernels(rules, contamination)
        report["decontamination"] = {"files": [str(path) for path, _ in evaluation],
                                     "evaluation_texts": contamination.texts,
                                     f"shorter_than_{rules.decontamination_ngram}_words": contamination.short}
        judge = Judge(rules, TurkishDetector(rules), contamination, (rules.minhash_bands, rules.minhash_rows))

        # shards
        def count(index: int, record: dict) -> None:
            source_report = report["sources"][shards[index][0]]
            source_report["read"] += shards[index][2]
            for name, value in record["counts"].items():
                if name.startswith("kept_"):
                    source_report[name] += value
                else:
                    source_report["dropped"][name] += value
            source_report["languages_dropped"].update(record["languages"])

        progress = tqdm(total=total_rows, desc="filter", unit=" rows", mininterval=5)
        todo = []
        for index, (_, shard, rows) in enumerate(shards):
            record = journal.record(f"{index:05d}")
            if record is None:
                for stale in journal.work.glob(f"*/part-{index:05d}-*.parquet"):  # a shard cut off by a kill
                    stale.unlink()
                todo.append(index)
                continue
            if not record["applied"]:  # killed between the shard's record and its index update
                apply_to_index(dedup, journal, index, record)
            count(index, record)
            progress.update(rows)
        with WorkerPool(judge_row_group, judge, workers) as pool:
            for index, counts, languages in filter_shards(todo, shards, pool, dedup, journal.work,
                                                          params.data.shard_rows, progress):
                dedup_journal = journal.state / f"dedup-{index:05d}.npz"
                dedup.commit(dedup_journal.with_suffix(".tmp"))
                dedup_journal.with_suffix(".tmp").rename(dedup_journal)
                record = {"counts": dict(counts), "languages": dict(languages), "applied": False}
                journal.done(f"{index:05d}", record)
                apply_to_index(dedup, journal, index, record)
                count(index, record)
        progress.close()

        # report
        for source_report in report["sources"].values():
            for key in ("dropped", "languages_dropped"):
                source_report[key] = dict(sorted(source_report[key].items()))
        totals = {split: sum(s[f"kept_{split}"] for s in report["sources"].values()) for split in SPLITS}
        if totals["train"] == 0 or totals["validation"] == 0:
            raise PipelineError(f"filter kept {totals['train']} train and {totals['validation']} validation rows; "
                                "loosen filter.* params or raise filter.validation_fraction")
    report["totals"] = totals
    write_json(paths.FILTER_REPORT, report)
    write_json(paths.metrics("filter"), metrics(report))
    write_text(paths.DATA_TABLE, data_table(report))
    for name, source_report in report["sources"].items():
        log.info("%s: %s", name, source_report)
    return report


def apply_to_index(dedup: Deduplicator, journal: Journal, index: int, record: dict) -> None:
    """A finished shard's rows into the dedup index (idempotent: again after a kill does no harm), then noted."""
    dedup.apply(journal.state / f"dedup-{index:05d}.npz")
    journal.done(f"{index:05d}", {**record, "applied": True})


def metrics(report: dict) -> dict:
    """The number an experiment is compared by: the share of rows kept (per source in reports/filter.json)."""
    read = sum(s["read"] for s in report["sources"].values())
    return {"keep_rate": round(sum(report["totals"].values()) / max(read, 1), 4)}


def data_table(report: dict) -> str:
    rules = sorted({rule for source in report["sources"].values() for rule in source["dropped"]})
    header = ["source", "read", "train", "validation", *rules]
    lines = ["# Filtered data", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, source in report["sources"].items():
        cells = [name, source["read"], source["kept_train"], source["kept_validation"]]
        cells += [source["dropped"].get(rule, 0) for rule in rules]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    languages = Counter()
    for source in report["sources"].values():
        languages.update(source["languages_dropped"])
    if languages:
        seen = ", ".join(f"{language} {count}" for language, count in languages.most_common())
        lines += ["", f"Dropped by language ID, by the language seen: {seen}."]
    decontamination = report["decontamination"]
    short = next((count for key, count in decontamination.items() if key.startswith("shorter_than_")), 0)
    lines += ["", f"Decontaminated against {decontamination['evaluation_texts']} evaluation texts (the validation "
              f"split and {', '.join(decontamination['files']) or 'no local benchmark file'}); {short} of them are "
              "shorter than the n-gram and cannot be matched."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
