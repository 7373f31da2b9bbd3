"""Exact and near duplicate removal across all sources; the first row seen (in source order) is kept.

Exact: a hash of the Turkish-folded, whitespace-collapsed text. Near: datasketch's MinHash over word 5-gram
shingles, in an LSH index of one memory-mapped Bloom filter per band (the design of datasketch's
MinHashLSHBloom), sized from the number of input rows, so memory stays bounded however large the corpus. The
price is a false-positive rate per band (`filter.dedup_false_positive_rate`): a few unique documents in 10^5
are dropped as duplicates, the same ones in every run.

The index lives in files, so a stopped filter resumes with it. The rows of the shard being filtered are checked
against the index and against each other (in-memory sets of this shard's keys); they enter the index only
when the shard is committed (`commit`, then `apply`), so a shard redone after a kill never finds itself.
"""
from __future__ import annotations

import hashlib
import math
import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH
from pybloomfilter import BloomFilter

from pipeline.errors import PipelineError

SEED = 1
SCHEME = "affine32"


def _upper_halves(shingles: np.ndarray) -> np.ndarray:
    return shingles >> np.uint64(32)  # the affine32 scheme takes 32-bit input hashes


@lru_cache(maxsize=4)
def _sketch(permutations: int) -> MinHash:
    # one per process, cleared for each document: constructing a MinHash (validating its permutations) cost
    # as much as hashing a document
    return MinHash(num_perm=permutations, seed=SEED, hashfunc=_upper_halves, scheme=SCHEME)


def minhash(shingles: np.ndarray, permutations: int) -> np.ndarray:
    """The hash values of datasketch's MinHash of a text's shingles (their 64-bit hashes: pipeline.wordscan).
    The whole array goes in as one 'value' whose hash function returns every shingle's hash (update_batch
    flattens it): fed one value at a time, datasketch spent more time in its Python loop than in the
    permutations."""
    sketch = _sketch(permutations)
    sketch.clear()
    sketch.update_batch([shingles])
    return sketch.digest()


def digest(key: bytes) -> bytes:
    """The exact-dedup key of a text: a hash of its dedup key's UTF-8 (pipeline.wordscan.Scan.key)."""
    return hashlib.blake2b(key, digest_size=16).digest()


# One odd 64-bit multiplier per signature position (fixed seed: the same keys in every process and run).
_BAND_MULTIPLIERS = np.random.default_rng(20261128).integers(1, 2**63, size=1024, dtype=np.uint64) * 2 + 1


def band_hashes(hashvalues: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 61-bit key per LSH band, for the band's Bloom filter: sum over the band of (value + 1) x its own odd
    multiplier, modulo 2**64, top 61 bits.

    Not datasketch's own BloomTable key (the plain sum of the band's values): MinHash values are minima, so
    small, and their plain sums collide often (tests/test_filter.py shows it; while building this, distinct pages
    were dropped as near duplicates that an exact-bucket MinHashLSH kept). Computed for all bands in one numpy
    call."""
    values = hashvalues[: bands * rows].astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = (values * _BAND_MULTIPLIERS[: bands * rows]).reshape(bands, rows).sum(axis=1, dtype=np.uint64)
    return mixed >> np.uint64(3)


def bloom_filter(path: Path, capacity: int, false_positive_rate: float) -> BloomFilter:
    """A memory-mapped Bloom filter at `path` (reopened if it exists) with fixed hash seeds: pybloomfilter draws
    random ones otherwise, and which unique rows collide would change from run to run."""
    if path.exists():
        return BloomFilter.open(str(path))
    hashes = math.ceil(math.log2(1 / false_positive_rate))
    seeds = [random.Random(f"{path.name}-{i}").getrandbits(32) for i in range(hashes)]
    return BloomFilter(max(capacity, 1), false_positive_rate, str(path), hash_seeds=seeds)


def banding(threshold: float, permutations: int) -> tuple[int, int]:
    """LSH bands x rows per band for a Jaccard threshold: datasketch's choice (false positives and negatives
    weighted equally)."""
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
    except ValueError as exc:  # e.g. too few bands for a threshold this close to 1
        raise PipelineError(
            f"filter.near_dedup_threshold={threshold} with filter.minhash_permutations={permutations}: {exc}"
        ) from None
    return lsh.b, lsh.r


def index_bytes(rows: int, threshold: float, permutations: int, false_positive_rate: float) -> float:
    """Disk the index takes for `rows` rows: one Bloom filter per band and one for exact keys."""
    bands, _ = banding(threshold, permutations)
    return (bands + 1) * rows * -math.log(false_positive_rate) / math.log(2) ** 2 / 8


class Deduplicator:
    """The near-dedup index is LSH with datasketch's banding of datasketch's MinHash, each band a Bloom filter
    (pybloomfilter, the backend of datasketch's MinHashLSHBloom, which is not used itself: its band keys
    collide and its filters take random seeds; see `band_hashes` and `bloom_filter`)."""

    def __init__(self, threshold: float, permutations: int, capacity: int, directory: Path,
                 false_positive_rate: float):
        directory.mkdir(parents=True, exist_ok=True)
        self.bands, self.rows = banding(threshold, permutations)
        self._filters = [bloom_filter(directory / f"band-{i}.bloom", capacity, false_positive_rate)
                         for i in range(self.bands)]
        self.exact = bloom_filter(directory / "exact.bloom", capacity, false_positive_rate)
        self._new_shard()

    def _new_shard(self) -> None:
        # this shard's kept rows; exact sets, since they hold one shard at most
        self.shard_digests: dict[bytes, None] = {}  # insertion-ordered: the journal keeps row order
        self.shard_bands: set[tuple[int, int]] = set()
        self.shard_rows: list[np.ndarray] = []

    def check(self, key_digest: bytes, bands: np.ndarray) -> str | None:
        """`key_digest` is `digest(dedup key)`, `bands` the `band_hashes` of its MinHash (both computed in a
        worker process). Returns 'exact_duplicate', 'near_duplicate' or None, and remembers the row when new."""
        if key_digest in self.shard_digests or key_digest in self.exact:
            return "exact_duplicate"
        keys = list(enumerate(bands.tolist()))
        if any(key in self.shard_bands or key[1] in self._filters[key[0]] for key in keys):
            return "near_duplicate"
        self.shard_bands.update(keys)
        self.shard_digests[key_digest] = None
        self.shard_rows.append(bands)
        return None

    def commit(self, journal: Path) -> None:
        """Write this shard's new rows to `journal` (the caller renames it into place), then start a new shard."""
        bands = np.stack(self.shard_rows) if self.shard_rows else np.zeros((0, self.bands), dtype=np.uint64)
        digests = np.frombuffer(b"".join(self.shard_digests), dtype=np.uint8).reshape(-1, 16)
        with journal.open("wb") as handle:
            np.savez(handle, digests=digests, bands=bands)
        self._new_shard()

    def apply(self, journal: Path) -> None:
        """Add a committed shard's rows to the index. Adding to a Bloom filter is idempotent: applying a
        journal again after a kill in the middle does no harm."""
        with np.load(journal) as saved:
            for row_digest in saved["digests"]:
                self.exact.add(row_digest.tobytes())
            for band, column in zip(self._filters, saved["bands"].T.tolist()):
                band.update(column)
        self.exact.sync()
        for band in self._filters:
            band.sync()
