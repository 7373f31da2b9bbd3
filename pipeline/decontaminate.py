"""Decontamination: training rows that share a long word n-gram with an evaluation text are dropped.

Evaluation texts are the validation split (known before filtering: it is a function of source and id) and
the local files the evaluate stage scores on (pipeline.eval_sets). A text shorter than the n-gram cannot be
matched and is counted apart (`Contamination.short`): a benchmark of short questions is not protected by this.

N-grams are hashed to 64-bit integers kept in one sorted array (8 bytes each, a Python set would take ~60),
searched per document (compiled, numba) behind a bit-array screen (4 to 8 bytes more each).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.text import normalise
from pipeline.wordscan import scan


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """64-bit hashes of the word n-grams of a text's dedup key (pipeline.wordscan); none for shorter texts."""
    return scan(normalise(text), n).ngrams


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
