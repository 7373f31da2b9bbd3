"""Decontamination: training rows that share a long word n-gram with an evaluation text are dropped.

Evaluation texts are the validation split (known before filtering: it is a function of source and id) and
the local files the evaluate stage scores on (`evaluation_files`): `filter.decontamination_files`,
`evaluate.english_file` and the data files of the local lm-eval tasks it runs (.jsonl/.json/.parquet/.csv rows,
text in their string fields, or .txt lines). A text shorter than the n-gram cannot be matched and is counted
apart (`Contamination.short`): a benchmark of short questions is not protected by this.

N-grams are hashed to 64-bit integers kept in one sorted array (8 bytes each, a Python set would take ~60),
searched per document (compiled, numba) behind a bit-array screen (4 to 8 bytes more each).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from numba import njit

from pipeline.errors import PipelineError
from pipeline.params import Params
from pipeline.text import normalise
from pipeline.wordscan import scan

BENCHMARK_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet", ".csv")


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """64-bit hashes of the word n-grams of a text's dedup key (pipeline.wordscan); none for shorter texts."""
    return scan(normalise(text), n).ngrams


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


def benchmark_texts(path: Path, param: str = "filter.decontamination_files") -> Iterable[str]:
    if not path.is_file():
        raise PipelineError(f"{param}: no such file {path}")
    try:
        if path.suffix == ".txt":
            yield from path.read_text(encoding="utf-8").splitlines()
        elif path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches():
                for row in batch.to_pylist():
                    yield from strings(row)
        elif path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    try:
                        row = json.loads(line) if line.strip() else None
                    except json.JSONDecodeError as exc:
                        raise PipelineError(
                            f"{path}:{number}: malformed JSON ({exc.msg}) in an evaluation file") from None
                    yield from strings(row)
        elif path.suffix == ".json":
            yield from strings(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.reader(handle):
                    yield from row
        else:
            raise PipelineError(f"{param}: {path} is not {'/'.join(BENCHMARK_SUFFIXES)}")
    except (UnicodeDecodeError, json.JSONDecodeError, pa.ArrowException) as exc:
        raise PipelineError(f"{path}: unreadable evaluation file: {exc}") from None


class _TaskLoader(yaml.SafeLoader):
    """lm-eval task YAMLs may hold `!function module.name` tags, which only lm-eval can resolve."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def lm_eval_task_files(include_path: str | None, tasks: list[str]) -> list[Path]:
    """The local data files (`dataset_kwargs.data_files`) of the tasks in `include_path`'s YAMLs that are run.
    Hub tasks have none: export their texts to filter.decontamination_files to protect them."""
    if not include_path or not Path(include_path).is_dir():
        return []
    found = []
    for config_file in sorted(Path(include_path).rglob("*.yaml")):
        try:
            config = yaml.load(config_file.read_text(encoding="utf-8"), Loader=_TaskLoader) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            reason = str(exc).strip().splitlines()[0]
            raise PipelineError(f"{config_file}: not a readable lm-eval task YAML ({reason})") from None
        if not isinstance(config, dict) or config.get("task") not in tasks:
            continue
        # a name, a list of names, or a dict of split -> name(s): every string in it
        for name in strings((config.get("dataset_kwargs") or {}).get("data_files")):
            if Path(name).suffix in BENCHMARK_SUFFIXES and Path(name).is_file():
                found.append(Path(name))
    return found


def evaluation_files(params: Params) -> list[tuple[Path, str]]:
    """Each local file the evaluate stage scores on, with the param that names it."""
    settings = params.evaluate
    files = [(Path(path), "filter.decontamination_files") for path in params.filter.decontamination_files]
    if Path(settings.english_file).is_file():
        files.append((Path(settings.english_file), "evaluate.english_file"))
    files += [(path, "evaluate.lm_eval_tasks") for path in
              lm_eval_task_files(settings.lm_eval_include_path, settings.lm_eval_tasks)]
    return list(dict.fromkeys(files))


# Bits of the screen per evaluation n-gram, at least (rounded up to a power of two): a training n-gram that is
# not one passes it with probability 1.5 to 3 %.
SCREEN_BITS_PER_NGRAM = 32


class Contamination:
    """Collect evaluation texts with `add`, then `freeze` once; `contaminated` asks about a training text's n-grams.

    Most training n-grams are in no evaluation text, and a binary search for each in a large sorted array costs
    a cache miss per step. So a one-hash Bloom screen goes first: a bit array indexed by the top bits of the
    n-gram hash; only the few n-grams that pass it are searched. (pybloomfilter, used for dedup, answers one
    Python call per item.)"""

    def __init__(self, n: int):
        self.n = n
        self.texts = self.short = 0  # evaluation texts added; those shorter than n words, which cannot match
        self._parts: list[np.ndarray] = []
        self.hashes = np.zeros(0, dtype=np.uint64)
        self._screen = np.zeros(1, dtype=np.uint8)
        self._shift = np.uint64(63)

    def add(self, text: str) -> None:
        hashes = ngram_hashes(text, self.n)
        self.texts += 1
        self.short += not len(hashes)
        self._parts.append(hashes)

    def freeze(self) -> "Contamination":
        self.hashes = np.unique(np.concatenate([self.hashes, *self._parts]))
        self._parts = []
        bits = max(int(len(self.hashes) * SCREEN_BITS_PER_NGRAM - 1).bit_length(), 3)
        self._shift = np.uint64(64 - bits)
        slots = self.hashes >> self._shift
        self._screen = np.zeros(1 << (bits - 3), dtype=np.uint8)
        np.bitwise_or.at(self._screen, slots >> np.uint64(3), np.left_shift(1, slots & np.uint64(7)).astype(np.uint8))
        return self

    def contaminated(self, ngrams: np.ndarray) -> bool:
        """`ngrams`: a training text's `ngram_hashes` with this n (pipeline.wordscan.Scan.ngrams)."""
        return bool(len(self.hashes)) and _any_found(ngrams, self._screen, self._shift, self.hashes)


@njit(cache=True, nogil=True)
def _any_found(ngrams, screen, shift, hashes):
    """Whether any of `ngrams` is in the sorted `hashes`, the screen asked first. Compiled (numba): the same in
    numpy was a dozen calls per document, a third of the filter's time on a page once its words were compiled."""
    for ngram in ngrams:
        slot = ngram >> shift
        if (screen[slot >> np.uint64(3)] >> (slot & np.uint64(7))) & 1:
            found = np.searchsorted(hashes, ngram)
            if found < len(hashes) and hashes[found] == ngram:
                return True
    return False
