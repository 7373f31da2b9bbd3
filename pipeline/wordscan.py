"""One compiled pass over a text: what the filter's quality rules, dedup and decontamination need of it.

`scan(text, n)` returns a text's dedup key (its Turkish-case-folded words joined by single spaces, as UTF-8:
pipeline.text.dedup_key of a normalised text), its word and letter counts, the most frequent word bigram's letters
(Gopher's repetition signal), its visible, symbol and digit characters, and 64-bit hashes of its word n-grams:
5-word shingles for MinHash and `n`-word ones for decontamination. The words are exactly pipeline.text.words'
of the folded text (whitespace-separated tokens with PUNCTUATION stripped from their ends) and the character
counts those of the plain definitions (tests/test_filter.py checks both on random Unicode). Turkish case folding
maps every code point to one code point of the same class (checked over all of Unicode), so the kernel folds
each code point through a table as it reads it.

Written by hand, with numba, because no library computes these and, done in Python (split, strip, join, a
Counter of bigrams, a regular expression for symbols, numpy calls per n-gram array), they took more than half
of the filter's CPU time on a Turkish page (bench/README.md). numba compiles it once per machine (cached beside
this file).

An n-gram's hash is polynomial over the key's bytes, sum of byte x BASE**position modulo 2**64 from the n-gram's
first byte: one prefix sum per document gives every n-gram's hash; BASE is odd, so invertible modulo 2**64.
"""
from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.text import PUNCTUATION, turkish_casefold

SHINGLE_WORDS = 5
BASE = 0x100000001B3
INVERSE = pow(BASE, -1, 2**64)
# A symbol is what this matches: not a letter, digit, space or common punctuation (underscore is \w, yet a symbol).
SYMBOL = re.compile(r"[^\w\s.,;:!?'\"()\-–—«»“”’]|_")
SPACE, STRIPPED, SYMBOLIC = 1, 2, 4  # bits of a code point's class


class Scan(NamedTuple):
    key: bytes  # UTF-8 of the folded words joined by single spaces (pipeline.text.dedup_key of a normalised text)
    words: int
    letters: int  # characters in words
    top_bigram_letters: int  # occurrences x letters of the most frequent bigram (first seen on ties); 0 under 4 words
    visible: int  # characters but spaces, newlines and tabs; at least 1
    symbols: int  # characters SYMBOL matches
    digits: int  # ASCII digits
    shingles: np.ndarray  # uint64 hash per SHINGLE_WORDS-word shingle; one of all the words when fewer
    ngrams: np.ndarray  # uint64 hash per `n`-word n-gram; none when fewer words


def _matches(pattern: re.Pattern, everything: str) -> np.ndarray:
    """Which code points a one-character `pattern` matches: one regular-expression pass over all of them."""
    replaced = pattern.sub("\0", everything)
    codes = np.frombuffer(replaced.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    found = codes != np.arange(len(codes), dtype=np.uint32)
    found[0] = pattern.fullmatch("\0") is not None
    return found


@lru_cache(maxsize=1)
def tables() -> tuple[np.ndarray, np.ndarray]:
    """Each code point's class bits (SPACE where str.split() separates, STRIPPED for PUNCTUATION, SYMBOLIC where
    SYMBOL matches) and its Turkish case folding: tables of all of Unicode (5.6 MB, ~0.2 s once per process)."""
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    classes = (_matches(re.compile(r"\s"), everything) * SPACE + _matches(SYMBOL, everything) * SYMBOLIC)
    classes = classes.astype(np.uint8)
    classes[[ord(c) for c in PUNCTUATION]] |= STRIPPED
    folds = np.frombuffer(turkish_casefold(everything).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return classes, folds


@njit(cache=True, nogil=True)
def _scan(data, classes, folds, shingle_n, ngram_n):
    size = len(data)
    key = np.empty(2 * size, dtype=np.uint8)  # (folding may lengthen a code point's UTF-8: ı is 2 bytes, I 1)
    starts = np.empty(size // 2 + 1, dtype=np.int64)  # each word's first byte in the key
    ends = np.empty(size // 2 + 1, dtype=np.int64)  # and one past its last
    letters = np.empty(size // 2 + 1, dtype=np.int64)
    folded = np.empty(size, dtype=np.int64)  # the current token's code points, folded
    stripped = np.empty(size, dtype=np.bool_)  # and whether each is punctuation to strip
    words = length = characters = invisible = symbols = digits = 0
    points = 0  # code points in the current token
    i = 0
    while i <= size:
        if i < size:
            lead = np.int64(data[i])
            if lead < 0x80:
                cp, width = lead, 1
            elif lead < 0xE0:
                cp, width = ((lead & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F), 2
            elif lead < 0xF0:
                cp = ((lead & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6) | (np.int64(data[i + 2]) & 0x3F)
                width = 3
            else:
                cp = ((lead & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12) | (
                    (np.int64(data[i + 2]) & 0x3F) << 6) | (np.int64(data[i + 3]) & 0x3F)
                width = 4
            kind = classes[cp]
            characters += 1
            invisible += cp == 32 or cp == 10 or cp == 9
            digits += 48 <= cp <= 57
            symbols += (kind & SYMBOLIC) != 0
            if not kind & SPACE:  # a token goes on
                folded[points] = folds[cp]
                stripped[points] = (kind & STRIPPED) != 0
                points += 1
                i += width
                continue
            i += width
        else:
            i += 1  # the end of the text ends the last token
        if points == 0:
            continue
        # a token ended: its punctuation stripped from both ends, what is left is a word
        first, last = 0, points - 1
        points = 0
        while first <= last and stripped[first]:
            first += 1
        while last >= first and stripped[last]:
            last -= 1
        if first > last:
            continue
        if words:
            key[length] = 32
            length += 1
        starts[words] = length
        for point in folded[first : last + 1]:  # UTF-8 of the folded code points
            if point < 0x80:
                key[length] = point
                length += 1
            elif point < 0x800:
                key[length], key[length + 1] = 0xC0 | (point >> 6), 0x80 | (point & 0x3F)
                length += 2
            elif point < 0x10000:
                key[length], key[length + 1] = 0xE0 | (point >> 12), 0x80 | ((point >> 6) & 0x3F)
                key[length + 2] = 0x80 | (point & 0x3F)
                length += 3
            else:
                key[length], key[length + 1] = 0xF0 | (point >> 18), 0x80 | ((point >> 12) & 0x3F)
                key[length + 2], key[length + 3] = 0x80 | ((point >> 6) & 0x3F), 0x80 | (point & 0x3F)
                length += 4
        ends[words] = length
        letters[words] = last - first + 1
        words += 1
    visible = max(characters - invisible, 1)
    # polynomial prefix hashes of the key's bytes, and the inverse powers that move a substring's to position 0
    prefix = np.zeros(length + 1, dtype=np.uint64)
    inverse = np.empty(length + 1, dtype=np.uint64)
    power = np.uint64(1)
    back = np.uint64(1)
    for j in range(length):
        prefix[j + 1] = prefix[j] + np.uint64(key[j]) * power
        inverse[j] = back
        power *= np.uint64(BASE)
        back *= np.uint64(INVERSE)
    inverse[length] = back
    if words == 0:
        return key[:0], 0, 0, 0, visible, symbols, digits, np.zeros(1, dtype=np.uint64), np.zeros(0, dtype=np.uint64)
    width = min(shingle_n, words)
    shingles = np.empty(words - width + 1, dtype=np.uint64)
    for w in range(words - width + 1):
        s, e = starts[w], ends[w + width - 1]
        shingles[w] = (prefix[e] - prefix[s]) * inverse[s]
    count = words - ngram_n + 1 if words >= ngram_n else 0
    ngrams = np.empty(count, dtype=np.uint64)
    for w in range(count):
        s, e = starts[w], ends[w + ngram_n - 1]
        ngrams[w] = (prefix[e] - prefix[s]) * inverse[s]
    total_letters = 0
    for w in range(words):
        total_letters += letters[w]
    top = 0
    if words >= 4:
        bigrams = np.empty(words - 1, dtype=np.uint64)
        for w in range(words - 1):
            s, e = starts[w], ends[w + 1]
            bigrams[w] = (prefix[e] - prefix[s]) * inverse[s]
        # count them in an open-addressing table (hash, count, first position), about a quarter full; two bigrams
        # are told apart by their 64-bit hashes alone (a collision in a page's few hundred: ~1e-15)
        slots = 4
        while slots < 4 * (words - 1):
            slots *= 2
        mask = np.uint64(slots - 1)
        seen = np.zeros(slots, dtype=np.uint64)
        counts = np.zeros(slots, dtype=np.int64)
        firsts = np.empty(slots, dtype=np.int64)
        best_count, best_first = 0, 0
        for w in range(words - 1):
            h = bigrams[w]  # (a slot is empty while its count is 0)
            slot = (h >> np.uint64(20)) & mask
            while counts[slot] and seen[slot] != h:
                slot = (slot + np.uint64(1)) & mask
            if not counts[slot]:
                seen[slot] = h
                firsts[slot] = w
            counts[slot] += 1
            # the most frequent so far; on a tie, the first seen (Counter.most_common's order)
            if counts[slot] > best_count or (counts[slot] == best_count and firsts[slot] < best_first):
                best_count, best_first = counts[slot], firsts[slot]
        top = best_count * (letters[best_first] + letters[best_first + 1])
    return key[:length], words, total_letters, top, visible, symbols, digits, shingles, ngrams


def scan(text: str, ngram: int) -> Scan:
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    key, *counts, shingles, ngrams = _scan(data, *tables(), SHINGLE_WORDS, ngram)
    return Scan(key.tobytes(), *counts, shingles, ngrams)
