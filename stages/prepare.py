"""prepare@<source>: read the plan's sample of one source into the one row schema, as parquet shards.

    python -m stages.prepare <source>          (dvc repro prepare@<source>)

Input: data/plan/<source>.json (rows to read), data.sources.<source>.dataset. Output:
data/prepared/<source>/part-*.parquet and reports/prepare/<source>.json (rows read, kept, skipped, bad; files).

Which rows: the whole source when the plan asks for all of it; otherwise a sample spread over the whole source,
the same in every run: its parquet files in a seeded order, at least `data.sample_files` of them, from each a
seeded choice of row groups, until the planned rows are in; from other files (JSON, JSON lines) a seeded share
of their rows. Hub files are downloaded a few at a time, only those the sample needs, at the commit the report
records, while worker processes read the ones already there. Each file read is a unit a killed run keeps
(pipeline.journal); downloaded files are deleted once read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import paths
from pipeline.atomic import write_json
from pipeline.closure import code_digest
from pipeline.cpus import usable_cpus
from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.journal import Journal
from pipeline.params import Params
from pipeline.provenance import environment, hub_dataset_revision
from pipeline.shards import ShardWriter
from pipeline.sources import BadRow, Skip, data_files, fetch, is_local, parquet_rows, read_file, to_row
from pipeline.workers import WorkerPool

DOWNLOADS = 4  # Hub files downloaded at once (each is itself fetched in parallel chunks by hf_xet)
log = logging.getLogger("prepare")


@dataclass(frozen=True)
class Unit:
    """One file's part of the sample: all its rows, some of its parquet row groups, or a share of its rows."""

    index: int  # its place in the source's seeded file order
    file: str  # local path or Hub URL
    groups: list[int] | None = None  # parquet row groups to read (None: all)
    share: float | None = None  # for other files: the share of rows kept (None: all)
    rows: int | None = None  # rows the unit holds, when known before reading


@dataclass(frozen=True)
class Context:
    """What a worker needs besides the unit."""

    source: str
    format: str
    shard_rows: int
    seed: str
    work: Path


def planned(source: str) -> tuple[int | None, int | None]:
    """Rows the plan reads of the source (None: all of it), and the rows the source has, when stated."""
    plan = paths.plan_file(source)
    if not plan.is_file():
        raise PipelineError(f"{plan}: missing; run the plan stage first (dvc repro plan)")
    entry = json.loads(plan.read_text())
    return entry["rows_to_read"], entry["rows"]


class Downloads:
    """Hub files fetched in the order they will be read by a few daemon threads, at most `ahead` of them on
    disk and not yet released: downloads overlap reading, and the disk holds a bounded number of files. (Daemon
    threads: Ctrl-C must not wait for a download to finish.)"""

    def __init__(self, files: list[str | None], directory: Path, ahead: int):
        """`files`: in reading order; None for a file not needed (its unit was done by an interrupted run)."""
        self.files, self.directory = files, directory
        self.results: dict[int, Path | BaseException] = {}
        self.ready = threading.Condition()
        self.room = threading.Semaphore(ahead)
        self.next = 0
        self.stopped = False
        for _ in range(DOWNLOADS):
            threading.Thread(target=self._download, daemon=True).start()

    def _download(self) -> None:
        while True:
            self.room.acquire()
            with self.ready:
                while self.next < len(self.files) and self.files[self.next] is None:
                    self.next += 1
                if self.stopped or self.next >= len(self.files):
                    return
                index, self.next = self.next, self.next + 1
            try:
                result: Path | BaseException = fetch(self.files[index], self.directory / f"{index:05d}")
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
                result = exc
            with self.ready:
                self.results[index] = result
                self.ready.notify_all()

    def get(self, index: int) -> Path:
        with self.ready:
            self.ready.wait_for(lambda: index in self.results)
            result = self.results[index]
        if isinstance(result, BaseException):
            raise result
        return result

    def release(self, index: int) -> None:
        shutil.rmtree(self.directory / f"{index:05d}", ignore_errors=True)
        self.room.release()

    def stop(self) -> None:
        with self.ready:
            self.stopped = True
        for _ in range(DOWNLOADS):
            self.room.release()


def row_counts(files: list[str], known: int | None) -> int | None:
    """Rows of a source of local JSON lines / parquet files (a JSON array is not counted: that is a full parse),
    or the stated count."""
    if known is not None:
        return known
    total = 0
    for file in files:
        path = Path(file)
        if path.suffix == ".parquet":
            total += pq.ParquetFile(path).metadata.num_rows
        elif path.suffix == ".jsonl":
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
        else:
            return None
    return total


def units(files: list[str], wanted: int | None, total: int | None, params: Params, name: str,
          journal: Journal, downloads: Downloads | None) -> Iterator[Unit]:
    """The sample, file by file. Parquet files are taken in the seeded order until `wanted` rows are in, each
    giving at most its share of them (at least `data.sample_files` files): a file's row groups are known only
    once it is here, so units come as their files arrive. Units done by an interrupted run come from the
    journal, without their files."""
    parquet = all(file.endswith(".parquet") for file in files)
    if not parquet:
        share = None if wanted is None or total is None or wanted >= total else wanted / total
        for index, file in enumerate(files):
            yield Unit(index, file, share=share)
        return
    remaining = wanted
    per_file = None if wanted is None else math.ceil(wanted / min(params.data.sample_files, len(files)))
    for index, file in enumerate(files):
        if remaining is not None and remaining <= 0:
            return
        record = journal.record(f"{index:05d}")
        if record is not None:
            unit = Unit(**record["unit"])
        else:
            local = downloads.get(index) if downloads else Path(file)
            metadata = pq.ParquetFile(local).metadata
            groups = list(range(metadata.num_row_groups))
            if per_file is not None:
                random.Random(f"{params.data.seed}-{name}-{index}").shuffle(groups)
                taken, rows = [], 0
                for group in groups:  # whole row groups, at most the file's share (at least one group)
                    size = metadata.row_group(group).num_rows
                    if taken and rows + size > min(per_file, remaining):
                        break
                    taken.append(group)
                    rows += size
                groups = sorted(taken)
            unit = Unit(index, file, groups=groups, rows=sum(metadata.row_group(g).num_rows for g in groups))
        if remaining is not None:
            remaining -= unit.rows
        yield unit


def read_unit(context: Context, task: tuple[Unit, str]) -> dict:
    """One unit into shards `part-<index>-*.parquet` (in a worker process): its counts."""
    unit, local = task
    counts = {"read": 0, "kept": 0, "bad": 0, "skipped": {}, "first_bad": None}
    writer = ShardWriter(context.work, context.shard_rows, stem=f"part-{unit.index:05d}")
    records = parquet_rows(Path(local), unit.groups) if local.endswith(".parquet") else read_file(Path(local))
    for number, record in enumerate(records):
        if unit.share is not None:  # a seeded coin per row, the same in every run
            coin = hashlib.blake2b(f"{context.seed}-{unit.index}-{number}".encode(), digest_size=8).digest()
            if int.from_bytes(coin, "big") / 2**64 >= unit.share:
                continue
        counts["read"] += 1
        try:
            writer.add(to_row(context.source, context.format, record))
            counts["kept"] += 1
        except Skip as skip:
            counts["skipped"][str(skip)] = counts["skipped"].get(str(skip), 0) + 1
        except BadRow as bad:
            counts["bad"] += 1
            counts["first_bad"] = counts["first_bad"] or f"{record.location}: {bad}"
    writer.close()
    return {"unit": asdict(unit), **counts, "shards": writer.shards}


def run(params: Params, name: str) -> dict:
    if name not in params.data.sources:
        raise PipelineError(f"data.sources: no source named {name!r} (sources: {', '.join(params.data.sources)})")
    source = params.data.sources[name]
    dataset, param = source.dataset, f"data.sources.{name}.dataset"
    wanted, stated = planned(name)
    revision = None if is_local(dataset.path) else hub_dataset_revision(dataset.path, dataset.revision, param)
    files = data_files(dataset, param, revision)
    local = [Path(f) for f in files if not f.startswith("hf://")]
    require_free(paths.PREPARED, sum(p.stat().st_size for p in local), f"{param} (local files)",
                 partial=paths.prepared(name))
    total = row_counts(files, stated) if len(local) == len(files) else stated
    if wanted is not None and (total is None or wanted < total) and all(f.endswith(".parquet") for f in files):
        random.Random(f"{params.data.seed}-{name}").shuffle(files)  # the sample spreads over the source
    elif total is not None and wanted is not None and wanted >= total:
        wanted = None  # all of it, in its own order
    out = paths.prepared(name)
    fingerprint = {"dataset": dataset.model_dump(), "revision": revision, "rows_to_read": wanted,
                   "seed": params.data.seed, "sample_files": params.data.sample_files,
                   "shard_rows": params.data.shard_rows, "code": code_digest(__file__),
                   "files": [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in local]}
    workers = usable_cpus()
    records = []
    with Journal(out, fingerprint) as journal:
        downloads = None
        if len(local) < len(files):
            needed = [None if journal.record(f"{i:05d}") else f for i, f in enumerate(files)]
            downloads = Downloads(needed, journal.state / "downloads", workers + DOWNLOADS)
        context = Context(name, dataset.format, params.data.shard_rows, str(params.data.seed), journal.work)

        def todo() -> Iterator[tuple[Unit, str]]:
            for unit in units(files, wanted, total, params, name, journal, downloads):
                record = journal.record(f"{unit.index:05d}")
                if record is not None:  # read by an interrupted run
                    records.append(record)
                else:
                    yield unit, str(downloads.get(unit.index) if downloads else unit.file)

        try:
            with WorkerPool(read_unit, context, workers) as pool:
                for record in tqdm(pool.map(todo()), desc=f"prepare {name}", unit=" files", mininterval=5):
                    index = record["unit"]["index"]
                    journal.done(f"{index:05d}", record)
                    if downloads:
                        downloads.release(index)
                    records.append(record)
        finally:
            if downloads:
                downloads.stop()
        report = summary(name, records, len(files), wanted, revision, params)
    write_json(paths.PREPARE_REPORTS / f"{name}.json", report)
    log.info("%s: %s", name, {k: v for k, v in report.items() if k != "provenance"})
    return report


def summary(name: str, records: list[dict], files: int, wanted: int | None, revision: str | None,
            params: Params) -> dict:
    """The source's counts over its units; too many bad rows stop the stage, naming the first."""
    records = sorted(records, key=lambda record: record["unit"]["index"])
    counts = {key: sum(record[key] for record in records) for key in ("read", "kept", "bad", "shards")}
    skipped: dict[str, int] = {}
    for record in records:
        for reason, count in record["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    first_bad = next((record["first_bad"] for record in records if record["first_bad"]), None)
    if counts["read"] == 0:
        raise PipelineError(f"data.sources.{name}: no rows read from {params.data.sources[name].dataset.path!r}")
    if counts["bad"] > params.data.max_bad_fraction * counts["read"]:
        raise PipelineError(f"data.sources.{name}: {counts['bad']} of {counts['read']} rows are bad, more than "
                            f"data.max_bad_fraction={params.data.max_bad_fraction}; first: {first_bad}")
    if first_bad:
        log.warning("%s: skipped %d bad rows, first: %s", name, counts["bad"], first_bad)
    return {**counts, "skipped": dict(sorted(skipped.items())), "first_bad": first_bad,
            "rows_planned": wanted, "files_read": len(records), "files": files, "revision": revision,
            "provenance": environment()}


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__, "source")
