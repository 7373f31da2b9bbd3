"""Stage outputs that appear whole or not at all: parquet shards in a directory, JSON reports.

Everything is written beside its final place and renamed at the end, so a failed or killed stage leaves the
previous output intact and nothing downstream ever reads a half-written file.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

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


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    """Rows in, parquet shards of at most `shard_rows` rows out (part-00000.parquet, ...)."""

    def __init__(self, directory: Path, shard_rows: int, schema: pa.Schema = ROWS):
        self.directory, self.shard_rows, self.schema = Path(directory), shard_rows, schema
        self.directory.mkdir(parents=True, exist_ok=True)
        self.buffer: list[dict] = []
        self.shards = 0
        self.rows = 0

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.Table.from_pylist(self.buffer, schema=self.schema)
        pq.write_table(table, self.directory / f"part-{self.shards:05d}.parquet", compression="zstd")
        self.rows += len(self.buffer)
        self.shards += 1
        self.buffer = []

    def close(self) -> None:
        self.flush()


def read_rows(directory: Path | str) -> Iterator[dict]:
    """Rows of every shard under `directory`, in file order."""
    for path in sorted(Path(directory).rglob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
            yield from batch.to_pylist()
