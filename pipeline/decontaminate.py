"""Decontamination: training rows that share a long word n-gram with an evaluation text are dropped.

Evaluation texts are the validation split (known before filtering: it is a function of source and id) and
any local benchmark files (`filter.decontamination_files`: .jsonl/.json/.parquet rows, text in their string
fields, or .txt lines). N-grams are hashed to 64-bit integers so millions of them fit in memory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq

from pipeline.dedup import shingle_hashes
from pipeline.errors import PipelineError
from pipeline.text import dedup_key


def ngram_hashes(key: str, n: int) -> set[int]:
    """64-bit hashes of the word n-grams of a dedup key (pipeline.text.dedup_key); none for shorter texts."""
    if len(key.split(" ")) < n:
        return set()
    return set(shingle_hashes(key, n).tolist())


def strings(value) -> Iterable[str]:
    """Every string inside a benchmark row (question, choices, passage...), whatever its schema."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def benchmark_texts(path: Path) -> Iterable[str]:
    if not path.is_file():
        raise PipelineError(f"filter.decontamination_files: no such file {path}")
    if path.suffix == ".txt":
        yield from path.read_text(encoding="utf-8").splitlines()
    elif path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                yield from strings(row)
    elif path.suffix == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield from strings(json.loads(line))
    elif path.suffix == ".json":
        yield from strings(json.loads(path.read_text(encoding="utf-8")))
    else:
        raise PipelineError(f"filter.decontamination_files: {path} is not .txt/.json/.jsonl/.parquet")


class Contamination:
    def __init__(self, n: int):
        self.n = n
        self.hashes: set[int] = set()

    def add(self, text: str) -> None:
        self.hashes |= ngram_hashes(dedup_key(text), self.n)

    def contaminated(self, ngrams: set[int]) -> bool:
        return not self.hashes.isdisjoint(ngrams)
