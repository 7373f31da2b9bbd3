"""Exact and near duplicate removal across all sources; the first row seen (in source order) is kept.

Exact: a hash of the Turkish-folded, whitespace-collapsed text. Near: MinHash over word 5-gram shingles with
datasketch's LSH index, so a document that differs by a few words from one already kept is dropped.
"""
from __future__ import annotations

import hashlib
import zlib
from functools import lru_cache

import numpy as np
from datasketch import MinHash, MinHashLSH

from pipeline.errors import PipelineError

SHINGLE_WORDS = 5


# A prime multiplier for the rolling hash; any odd 64-bit constant spreads the words' bits.
ROLL = np.uint64(0x9E3779B97F4A7C15)


@lru_cache(maxsize=2)  # dedup and decontamination ask for the same document one after the other
def _word_hashes(key: str) -> np.ndarray:
    words = key.split(" ")
    return np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))


def shingle_hashes(key: str, n: int) -> np.ndarray:
    """64-bit hashes of the word n-grams of a dedup key, by polynomial combination of per-word crc32s.

    Written by hand because joining and hashing every n-gram string in Python was the filter's largest
    cost; numpy's sliding windows make it one vectorised product per document. Deterministic in every
    process. Documents shorter than n words give one hash of all their words."""
    word_hashes = _word_hashes(key)
    width = min(n, len(word_hashes))
    powers = np.array([int(ROLL) ** k % 2**64 for k in range(width)], dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping modulo 2**64 is the point
        return np.lib.stride_tricks.sliding_window_view(word_hashes, width) @ powers


@lru_cache(maxsize=4)
def _permutations(permutations: int):
    return MinHash(num_perm=permutations, seed=1).permutations  # drawing them anew per document costs ~30 %


def minhash(key: str, permutations: int) -> MinHash:
    signature = MinHash(num_perm=permutations, seed=1, hashfunc=int, permutations=_permutations(permutations),
                        scheme="affine32")
    signature.update_batch((shingle_hashes(key, SHINGLE_WORDS) >> np.uint64(32)).tolist())
    return signature


class Deduplicator:
    def __init__(self, threshold: float, permutations: int):
        self.seen: set[bytes] = set()
        self.permutations = permutations
        try:
            self.lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
        except ValueError as exc:  # e.g. too few bands for a threshold this close to 1
            raise PipelineError(
                f"filter.near_dedup_threshold={threshold} with filter.minhash_permutations={permutations}: {exc}"
            ) from None
        self.count = 0

    def check(self, key: str, signature: MinHash | None = None) -> str | None:
        """`key` is a dedup key (pipeline.text.dedup_key), `signature` its `minhash` if already computed (in a
        worker process). Returns 'exact_duplicate', 'near_duplicate' or None and remembers the text when new."""
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
        if digest in self.seen:
            return "exact_duplicate"
        signature = signature or minhash(key, self.permutations)
        if self.lsh.query(signature):
            return "near_duplicate"
        self.seen.add(digest)
        self.lsh.insert(str(self.count), signature)
        self.count += 1
        return None
