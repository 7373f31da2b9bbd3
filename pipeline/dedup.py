"""Exact and near duplicate removal across all sources; the first row seen (in source order) is kept.

Exact: a hash of the Turkish-folded, whitespace-collapsed text. Near: MinHash over word 5-gram shingles with
datasketch's LSH index, so a document that differs by a few words from one already kept is dropped.
"""
from __future__ import annotations

import hashlib

from datasketch import MinHash, MinHashLSH

SHINGLE_WORDS = 5


class Deduplicator:
    def __init__(self, threshold: float, permutations: int):
        self.seen: set[bytes] = set()
        self.permutations = permutations
        self.lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
        self.count = 0

    def _minhash(self, tokens: list[str]) -> MinHash:
        shingles = {" ".join(tokens[i : i + SHINGLE_WORDS]) for i in range(max(len(tokens) - SHINGLE_WORDS + 1, 1))}
        signature = MinHash(num_perm=self.permutations, seed=1)
        signature.update_batch([s.encode("utf-8") for s in shingles])
        return signature

    def check(self, key: str) -> str | None:
        """`key` is a dedup key (pipeline.text.dedup_key). Returns 'exact_duplicate', 'near_duplicate' or None
        and remembers the text when it is new."""
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()
        if digest in self.seen:
            return "exact_duplicate"
        signature = self._minhash(key.split(" "))
        if self.lsh.query(signature):
            return "near_duplicate"
        self.seen.add(digest)
        self.lsh.insert(str(self.count), signature)
        self.count += 1
        return None
