"""Decontamination: training rows that share a long word n-gram with an evaluation text are dropped.

Evaluation texts are the validation split (known before filtering: it is a function of source and id) and
any local benchmark files (`filter.decontamination_files`: .jsonl/.json/.parquet rows, text in their string
fields, or .txt lines). N-grams are hashed to 64-bit integers kept in one sorted array (8 bytes each, a
Python set would take ~60), searched per document with numpy behind a bit-array screen (4 to 8 bytes more each).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow.parquet as pq

from pipeline.dedup import shingle_hashes
from pipeline.errors import PipelineError
from pipeline.text import dedup_key


def ngram_hashes(key: str, n: int) -> np.ndarray:
    """64-bit hashes of the word n-grams of a dedup key (pipeline.text.dedup_key); none for shorter texts."""
    if key.count(" ") + 1 < n:
        return np.zeros(0, dtype=np.uint64)
    return shingle_hashes(key, n)


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


# Bits of the screen per evaluation n-gram, at least (rounded up to a power of two): a training n-gram that is
# not one passes it with probability 1.5 to 3 %.
SCREEN_BITS_PER_NGRAM = 32


class Contamination:
    """Collect evaluation texts with `add`, then `freeze` once; `contaminated` asks about a training key.

    Most training n-grams are in no evaluation text, and a binary search for each in a large sorted array costs
    a cache miss per step. So a one-hash Bloom screen goes first: a bit array
    indexed by the top bits of the n-gram hash, looked up for a whole document in one numpy call; only the few
    n-grams that pass it are searched. (pybloomfilter, used for dedup, answers one Python call per item.)"""

    def __init__(self, n: int):
        self.n = n
        self._parts: list[np.ndarray] = []
        self.hashes = np.zeros(0, dtype=np.uint64)
        self._screen = np.zeros(1, dtype=np.uint8)
        self._shift = np.uint64(63)

    def add(self, text: str) -> None:
        self._parts.append(ngram_hashes(dedup_key(text), self.n))

    def freeze(self) -> "Contamination":
        self.hashes = np.unique(np.concatenate([self.hashes, *self._parts]))
        self._parts = []
        bits = max(int(len(self.hashes) * SCREEN_BITS_PER_NGRAM - 1).bit_length(), 3)
        self._shift = np.uint64(64 - bits)
        slots = self.hashes >> self._shift
        self._screen = np.zeros(1 << (bits - 3), dtype=np.uint8)
        np.bitwise_or.at(self._screen, slots >> np.uint64(3), np.left_shift(1, slots & np.uint64(7)).astype(np.uint8))
        return self

    def contaminated(self, key: str) -> bool:
        if not len(self.hashes):
            return False
        ngrams = ngram_hashes(key, self.n)
        slots = ngrams >> self._shift
        ngrams = ngrams[(self._screen[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)) & 1 == 1]
        if not len(ngrams):
            return False
        found = np.searchsorted(self.hashes, ngrams).clip(max=len(self.hashes) - 1)
        return bool((self.hashes[found] == ngrams).any())
