"""Parquet shards written a row group at a time, so memory stays bounded however large the output; a shard
appears under its name only once it is complete."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.rows import ROWS

# Rows a ShardWriter holds before writing them as one parquet row group: its memory bound, and the unit of
# work the filter's processes read.
ROW_GROUP = 1024


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
