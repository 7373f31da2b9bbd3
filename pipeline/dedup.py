"""Exact and near duplicate removal across all sources; the first row seen (in source order) is kept.

Exact: a 64-bit key of the hash of the Turkish-folded, whitespace-collapsed text (`digest`). Near: datasketch's
MinHash over word 5-gram shingles (`filter.minhash_permutations`), LSH banding (`filter.minhash_bands` bands of
`filter.minhash_rows` values) to find candidates, and every candidate verified against its stored signature: a
near duplicate is a candidate whose MinHash values agree with the row's on at least `filter.near_dedup_threshold`
of the permutations (the estimate of their Jaccard similarity). Banding alone cannot do both what is asked of it,
finding 95 % of the pairs at J = 0.85 and flagging under 1 % at J = 0.6: 14 bands x 8 rows (FineWeb's) find
99 % at 0.85 but flag 21 % at 0.6, and an S-curve steep enough needs ~50 bands of 17 rows (850 permutations).
Verified, 14 x 8 over 128 permutations at a threshold of 0.75 dropped 98.7 % of 1,000 pairs at J = 0.85-0.87 and
none of 1,000 at 0.5-0.6 (documents with word edits; tests/test_dedup.py checks both).

The index lives in memory-mapped files in the directory the stage gives (sized from the row count when created:
RAM does not grow with the corpus, the OS pages in what lookups touch), so a stopped filter resumes with it:
- exact.npy: an open-addressing hash set of the exact keys;
- bands.npy: one open-addressing table per band, each entry a 32-bit fingerprint of the band's key and the row's
  id (a Bloom filter cannot say which row matched, so it cannot be verified);
- signatures.npy: each row's signature, one byte per permutation (the low byte of its MinHash value: two different
  values agree by chance once in 256, which raises an estimate by at most (1 - J) / 256);
- rows.json: how many rows the index holds.
The rows of the shard being filtered are checked against the index and against each other (in memory: a shard
at most); they enter the index only when the shard is committed (`commit`, then `apply`), so a shard redone
after a kill never finds itself. Same rows in the same order: same drops, same files.
"""
from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from datasketch import MinHash
from numba import njit

from pipeline.errors import PipelineError

SEED = 1
SCHEME = "affine32"
LOAD = 0.5  # at most half of a table's slots in use: linear probing then looks at ~1.5 slots on a hit, ~2.5 on a miss
MAX_ROWS = 2**32 - 1  # row ids are 32 bits of a band table's entries


class Sketch(NamedTuple):
    """What a worker computes of a candidate row for near dedup."""

    signature: np.ndarray  # uint8 per permutation: the low byte of each MinHash value
    bands: np.ndarray  # uint64 per band: its LSH key


def _upper_halves(shingles: np.ndarray) -> np.ndarray:
    return shingles >> np.uint64(32)  # the affine32 scheme takes 32-bit input hashes


@lru_cache(maxsize=4)
def _minhash(permutations: int) -> MinHash:
    # one per process, cleared for each document: constructing a MinHash (validating its permutations) cost
    # as much as hashing a document
    return MinHash(num_perm=permutations, seed=SEED, hashfunc=_upper_halves, scheme=SCHEME)


def minhash(shingles: np.ndarray, permutations: int) -> np.ndarray:
    """The hash values of datasketch's MinHash of a text's shingles (their 64-bit hashes: pipeline.wordscan).
    The whole array goes in as one 'value' whose hash function returns every shingle's hash (update_batch
    flattens it): fed one value at a time, datasketch spent more time in its Python loop than in the
    permutations."""
    sketcher = _minhash(permutations)
    sketcher.clear()
    sketcher.update_batch([shingles])
    return sketcher.digest()


def digest(key: bytes) -> bytes:
    """The exact-dedup key of a text: a hash of its dedup key's UTF-8 (pipeline.wordscan.Scan.key)."""
    return hashlib.blake2b(key, digest_size=16).digest()


# One odd 64-bit multiplier per signature position (fixed seed: the same keys in every process and run).
_BAND_MULTIPLIERS = np.random.default_rng(20261128).integers(1, 2**63, size=1024, dtype=np.uint64) * 2 + 1


def band_hashes(hashvalues: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 61-bit key per LSH band: sum over the band of (value + 1) x its own odd multiplier, modulo 2**64, top
    61 bits. Not the plain sum of the band's values (datasketch's BloomTable key): MinHash values are minima, so
    small, and their plain sums collide. Computed for all bands in one numpy call."""
    values = hashvalues[: bands * rows].astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = (values * _BAND_MULTIPLIERS[: bands * rows]).reshape(bands, rows).sum(axis=1, dtype=np.uint64)
    return mixed >> np.uint64(3)


def sketch(shingles: np.ndarray, permutations: int, bands: int, rows: int) -> Sketch:
    """What a worker sends for a candidate row: its signature and band keys (pure; the stage's process only
    looks them up)."""
    values = minhash(shingles, permutations)
    return Sketch((values & 0xFF).astype(np.uint8), band_hashes(values, bands, rows))


def check_banding(permutations: int, bands: int, rows: int) -> None:
    if bands * rows > permutations:
        raise PipelineError(f"filter.minhash_bands x filter.minhash_rows ({bands} x {rows}) exceeds "
                            f"filter.minhash_permutations ({permutations})")


def slots(rows: int) -> int:
    return int(rows / LOAD) + 1


def index_bytes(rows: int, permutations: int, bands: int) -> int:
    """Disk the index takes for `rows` rows: the exact set, a table per band (8 bytes a slot) and the signatures."""
    return 8 * slots(rows) * (bands + 1) + rows * permutations


def _exact_key(row_digest: bytes) -> int:
    return int.from_bytes(row_digest[:8], "little") or 1  # 0 marks an empty slot


@njit(cache=True)
def _has(table, key):
    slot = key % np.uint64(len(table))
    while table[slot] != 0:
        if table[slot] == key:
            return True
        slot = (slot + np.uint64(1)) % np.uint64(len(table))
    return False


@njit(cache=True)
def _entry(key, row):
    fingerprint = key >> np.uint64(32)
    if fingerprint == 0:
        fingerprint = np.uint64(1)  # an entry is never 0, the mark of an empty slot
    return (fingerprint << np.uint64(32)) | np.uint64(row)


@njit(cache=True)
def _near(tables, keys, signatures, signature, needed):
    """Whether a row of the index shares a band with `keys` (fingerprint and all) and agrees with `signature` on
    `needed` permutations or more."""
    size = np.uint64(tables.shape[1])
    for band in range(len(keys)):
        fingerprint = _entry(keys[band], 0) >> np.uint64(32)
        slot = keys[band] % size
        while tables[band, slot] != 0:
            entry = tables[band, slot]
            if entry >> np.uint64(32) == fingerprint:
                row = entry & np.uint64(0xFFFFFFFF)
                agree = 0
                for position in range(len(signature)):
                    agree += signatures[row, position] == signature[position]
                if agree >= needed:
                    return True
            slot = (slot + np.uint64(1)) % size
    return False


@njit(cache=True)
def _add(exact, tables, exact_keys, band_keys, ids):
    """Every row into the exact set and its band tables; an entry already there is not added again (a journal
    applied twice leaves the tables as once)."""
    size = np.uint64(tables.shape[1])
    for i in range(len(ids)):
        slot = exact_keys[i] % np.uint64(len(exact))
        while exact[slot] != 0 and exact[slot] != exact_keys[i]:
            slot = (slot + np.uint64(1)) % np.uint64(len(exact))
        exact[slot] = exact_keys[i]
        for band in range(band_keys.shape[1]):
            entry = _entry(band_keys[i, band], ids[i])
            slot = band_keys[i, band] % size
            while tables[band, slot] != 0 and tables[band, slot] != entry:
                slot = (slot + np.uint64(1)) % size
            tables[band, slot] = entry


def _open(path: Path, dtype, shape: tuple[int, ...]) -> np.memmap:
    if path.exists():
        array = np.load(path, mmap_mode="r+")
        if array.shape != shape or array.dtype != dtype:
            raise PipelineError(f"{path}: a dedup index of another size ({array.shape}, not {shape}); delete it")
        return array
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # sparse: zero pages cost nothing


class Deduplicator:
    """The index (module docstring) and the shard being filtered. `check_and_add` judges one candidate row and
    remembers it when it is new; `commit` writes the shard's new rows to a journal; `apply` adds a journal's
    rows to the index."""

    def __init__(self, directory: Path, capacity: int, permutations: int, bands: int, rows: int,
                 threshold: float):
        check_banding(permutations, bands, rows)
        if capacity > MAX_ROWS:
            raise PipelineError(f"the dedup index holds at most {MAX_ROWS} rows; the input has {capacity}")
        directory.mkdir(parents=True, exist_ok=True)
        self.bands, self.rows, self.permutations = bands, rows, permutations
        self.needed = math.ceil(threshold * permutations - 1e-9)
        self._files = [_open(directory / "exact.npy", np.uint64, (slots(capacity),)),
                       _open(directory / "bands.npy", np.uint64, (bands, slots(capacity))),
                       _open(directory / "signatures.npy", np.uint8, (max(capacity, 1), permutations))]
        # plain arrays over the same mapped memory: numba takes them several microseconds faster than memmaps
        self._exact, self._tables, self._signatures = (np.asarray(array) for array in self._files)
        self._count_file = directory / "rows.json"
        self.indexed = json.loads(self._count_file.read_text())["rows"] if self._count_file.exists() else 0
        self._next_id = self.indexed
        self._new_shard()

    def _new_shard(self) -> None:
        # this shard's new rows, in memory (a shard at most): exact keys in row order, and per band its keys with
        # the row that has it (a list where rows share a key: rare, and a list per key would make Python's garbage
        # collector walk millions of them, which cost more than the rest of the check)
        self._shard_exact: dict[int, None] = {}
        self._shard_bands: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._shard_signatures: list[np.ndarray] = []
        self._shard_keys: list[np.ndarray] = []

    def check_and_add(self, row_digest: bytes, row: Sketch) -> str | None:
        """'exact_duplicate', 'near_duplicate' or None; None also adds the row to this shard (the index gets it
        at `apply`). `row_digest` is `digest(dedup key)`, `row` its `sketch` (both computed in a worker)."""
        key = _exact_key(row_digest)
        if key in self._shard_exact or _has(self._exact, np.uint64(key)):
            return "exact_duplicate"
        if _near(self._tables, row.bands, self._signatures, row.signature, self.needed) or self._near_in_shard(row):
            return "near_duplicate"
        local = len(self._shard_signatures)
        self._shard_exact[key] = None
        for band, band_key in enumerate(row.bands.tolist()):
            earlier = self._shard_bands[band].get(band_key)
            self._shard_bands[band][band_key] = local if earlier is None else [
                *(earlier if isinstance(earlier, list) else [earlier]), local]
        self._shard_signatures.append(row.signature)
        self._shard_keys.append(row.bands)
        return None

    def _near_in_shard(self, row: Sketch) -> bool:
        for band, band_key in enumerate(row.bands.tolist()):
            found = self._shard_bands[band].get(band_key)
            for local in () if found is None else found if isinstance(found, list) else (found,):
                if np.count_nonzero(self._shard_signatures[local] == row.signature) >= self.needed:
                    return True
        return False

    def commit(self, journal: Path) -> None:
        """Write this shard's new rows, with the ids they take in the index, to `journal` (the caller renames it
        into place), then start a new shard."""
        count = len(self._shard_signatures)
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.uint64)
        with journal.open("wb") as handle:
            np.savez(handle, ids=ids, exact=np.array(list(self._shard_exact), dtype=np.uint64),
                     bands=np.stack(self._shard_keys) if count else np.zeros((0, self.bands), dtype=np.uint64),
                     signatures=np.stack(self._shard_signatures) if count
                     else np.zeros((0, self.permutations), dtype=np.uint8))
        self._next_id += count
        self._new_shard()

    def apply(self, journal: Path) -> None:
        """Add a committed shard's rows to the index. Idempotent: applying a journal again after a kill in the
        middle writes the same signatures and adds no entry twice."""
        with np.load(journal) as saved:
            ids, exact, bands, signatures = saved["ids"], saved["exact"], saved["bands"], saved["signatures"]
        if len(ids) and ids[-1] >= len(self._signatures):
            raise PipelineError(f"{journal}: row {ids[-1]} is past the dedup index's {len(self._signatures)} rows")
        self._signatures[ids] = signatures
        _add(self._exact, self._tables, exact, bands, ids)
        for array in self._files:
            array.flush()
        self.indexed = max(self.indexed, int(ids[-1]) + 1 if len(ids) else 0)
        self._next_id = max(self._next_id, self.indexed)
        partial = self._count_file.with_suffix(".tmp")
        partial.write_text(json.dumps({"rows": self.indexed}))
        partial.rename(self._count_file)
