"""Stage outputs that appear whole or not at all: parquet shards in a directory, JSON reports.

Everything is written beside its final place and renamed at the end, so a failed or killed stage leaves the
previous output intact and nothing downstream ever reads a half-written file. Stages that take hours
(prepare, filter) write into a `resumable_dir` instead: it survives a kill, and a rerun with the same inputs
and params keeps the shards it completed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError, RetryableError

# Rows a ShardWriter holds before writing them as one parquet row group: its memory bound, and the unit of
# work the filter's processes read.
ROW_GROUP = 1024
STATE = ".state"  # a resumable_dir's bookkeeping (fingerprint, done markers), not part of the output
log = logging.getLogger("outputs")

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
ROWS = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("text", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("meta", pa.struct([("url", pa.string()), ("title", pa.string())])),
    ]
)


def _replace(path: Path, new: Path) -> None:
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        new.rename(path)
        shutil.rmtree(old)
    else:
        new.rename(path)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        _replace(path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def resumable_dir(path: Path | str, fingerprint: dict) -> Iterator[Path]:
    """Like `atomic_dir`, but the work directory (`.<name>.partial` beside `path`) outlives a killed run: a
    rerun whose `fingerprint` (inputs and params) matches gets it back with the shards already done. A
    different fingerprint starts afresh; a `PipelineError` (bad input, bad params) removes it, since running
    again would only fail the same way. The caller keeps its bookkeeping under `<work>/.state/`, which is
    dropped, with any unfinished `.tmp` file, before the work directory becomes `path`."""
    path = Path(path)
    work = path.with_name(f".{path.name}.partial")
    stamp = work / STATE / "fingerprint.json"
    expected = json.dumps(fingerprint, sort_keys=True, default=str)
    if work.exists() and not (stamp.is_file() and stamp.read_text() == expected):
        log.info("%s: inputs, params or code changed since the interrupted run; starting afresh", path)
        _discard(work)
    if work.exists():
        log.info("%s: resuming the interrupted run in %s", path, work)
    else:
        stamp.parent.mkdir(parents=True)
        stamp.write_text(expected)
    try:
        yield work
    except RetryableError:  # e.g. the Hub stream dropped: the next run continues from the shards done
        raise
    except PipelineError:
        _discard(work)
        raise
    stamp.unlink()  # first: a kill while the rest is removed must not leave a directory that looks resumable
    shutil.rmtree(work / STATE)
    for leftover in work.rglob("*.tmp"):
        leftover.unlink()
    _replace(path, work)


def _discard(work: Path) -> None:
    (work / STATE / "fingerprint.json").unlink(missing_ok=True)  # first, for the same reason
    shutil.rmtree(work, ignore_errors=True)


def code_digest(*files: str | Path) -> str:
    """A digest of the pipeline package and the given files: a resumed run must not mix shards made by
    different code."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(package.glob("*.py")) + sorted(Path(f).resolve() for f in files):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def write_json(path: Path | str, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_text(path: Path | str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class ShardWriter:
    """Rows in, parquet shards of at most `shard_rows` rows out (`<stem>-00000.parquet`, ...), written a row
    group at a time so memory stays bounded; a shard appears under its name only once it is complete.
    `first_shard` continues the numbering of an interrupted run. `background`: parquet encoding and compression
    run in a thread of their own (Arrow releases the GIL there), off the calling thread, which for the filter is
    the one every worker's output goes through; at most two row groups wait for it."""

    def __init__(self, directory: Path, shard_rows: int, schema: pa.Schema = ROWS, stem: str = "part",
                 first_shard: int = 0, background: bool = False):
        self.directory, self.shard_rows, self.schema, self.stem = Path(directory), shard_rows, schema, stem
        self.directory.mkdir(parents=True, exist_ok=True)
        self.buffer: list[dict] = []
        self.tables: list[pa.Table] = []  # add_table's rows not yet written
        self.table_rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.in_shard = 0
        self.shards = first_shard
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shard-writer") if background else None
        self._pending: deque = deque()  # the thread's row groups not yet written, in order

    def _path(self) -> Path:
        return self.directory / f"{self.stem}-{self.shards:05d}.parquet"

    def add(self, row: dict) -> bool:
        """Buffer a row; True when it completed a shard."""
        if self.table_rows:
            self._write_tables(self.table_rows)  # tables added before this row go first
        self.buffer.append(row)
        if len(self.buffer) >= ROW_GROUP or self.in_shard + len(self.buffer) >= self.shard_rows:
            self._write_group()
        if self.in_shard >= self.shard_rows:
            self._close_shard()
            return True
        return False

    def add_table(self, table: pa.Table) -> None:
        """Rows already in Arrow form (the filter's workers build them), gathered into row groups of ROW_GROUP
        rows: the filter hands over a few kept rows of a split at a time, and a row group each would bloat the
        file and its footer."""
        self._write_group()  # rows added one by one before these tables go first
        self.tables.append(table)
        self.table_rows += table.num_rows
        while self.table_rows and (self.table_rows >= ROW_GROUP or self.in_shard + self.table_rows >= self.shard_rows):
            self._write_tables(min(ROW_GROUP, self.shard_rows - self.in_shard))

    def _write_tables(self, rows: int) -> None:
        gathered = pa.concat_tables(self.tables)
        self._write(gathered.slice(0, rows).combine_chunks())
        rest = gathered.slice(rows)
        self.tables, self.table_rows = [rest], rest.num_rows
        if self.in_shard >= self.shard_rows:
            self._close_shard()

    def _write_group(self) -> None:
        if self.buffer:
            self._write(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def _write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self._path().with_suffix(".tmp"), self.schema, compression="zstd")
        if self._thread is None:
            self.writer.write_table(table, row_group_size=ROW_GROUP)
        else:
            self._pending.append(self._thread.submit(self.writer.write_table, table, row_group_size=ROW_GROUP))
            while len(self._pending) > 2:
                self._pending.popleft().result()  # re-raises the thread's error here
        self.in_shard += table.num_rows

    def _close_shard(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        self.writer.close()
        self._path().with_suffix(".tmp").rename(self._path())
        self.writer, self.in_shard = None, 0
        self.shards += 1

    def close(self) -> None:
        self._write_group()
        if self.table_rows:
            self._write_tables(self.table_rows)
        if self.writer is not None:
            self._close_shard()
        if self._thread is not None:
            self._thread.shutdown()
