"""Document quality rules in the spirit of Gopher, C4 and FineWeb; each has its own param and drop counter.

`failed_rule(text, params, scanned)` returns the name of the first rule a text fails, or None. Rules that
judge lines (duplicate lines, punctuated lines) apply only to texts with several lines; chats get the length
and boilerplate rules only (`failed_chat_rule`).
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
from numba import njit

from pipeline.params import Filter
from pipeline.text import dedup_key, words
from pipeline.wordscan import Scan, scan

TERMINAL_PUNCTUATION = (".", "!", "?", "…", '"', "”", "»", ":", ";")
MIN_LINES_FOR_LINE_RULES = 3


def _duplicate_fraction(items: list[str]) -> float:
    """Share of the items (lines, paragraphs) that occur more than once."""
    counts = Counter(items)
    return sum(n for n in counts.values() if n > 1) / len(items)


@lru_cache(maxsize=4)
def _encoded(markers: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The markers' UTF-8 end to end, where each starts (and one past the last), and which first two bytes begin
    one (pipeline.params keeps markers of MIN_MARKER_CHARS characters and more)."""
    encoded = [marker.encode("utf-8") for marker in markers]
    starts = np.cumsum([0, *map(len, encoded)])
    pairs = np.zeros(1 << 16, dtype=np.bool_)
    for marker in encoded:
        pairs[marker[0] << 8 | marker[1]] = True
    return np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8), starts, pairs


@njit(cache=True, nogil=True)
def _found_any(text, patterns, starts, pairs):
    """Whether a pattern occurs in `text`: only where some pattern's first two bytes are is each compared. One
    compiled pass: nine `bytes.__contains__` searches, one per default marker, were half the rules' time."""
    for at in range(len(text) - 1):
        if pairs[(np.int64(text[at]) << 8) | text[at + 1]]:
            for m in range(len(starts) - 1):
                begin, end = starts[m], starts[m + 1]
                if at + end - begin <= len(text):
                    k = 0
                    while k < end - begin and text[at + k] == patterns[begin + k]:
                        k += 1
                    if k == end - begin:
                        return True
    return False


def has_boilerplate(key: bytes, markers: list[str]) -> bool:
    """`key`: a text's dedup key (its Turkish-folded words joined by single spaces, UTF-8), the form markers
    are kept in (pipeline.params folds them at load)."""
    return bool(markers) and _found_any(np.frombuffer(key, dtype=np.uint8), *_encoded(tuple(markers)))


def failed_rule(text: str, rules: Filter, scanned: Scan | None = None) -> str | None:
    """`scanned`: pipeline.wordscan.scan of the text, when the caller has it already: the filter does, for dedup
    and decontamination too."""
    if scanned is None:
        scanned = scan(text, rules.decontamination_ngram)
    if not scanned.words or not rules.min_words <= scanned.words <= rules.max_words:
        return "word_count"
    mean_length = scanned.letters / scanned.words
    if not rules.min_mean_word_length <= mean_length <= rules.max_mean_word_length:
        return "mean_word_length"
    if scanned.symbols / scanned.visible > rules.max_symbol_ratio:
        return "symbol_ratio"
    if scanned.digits / scanned.visible > rules.max_digit_ratio:
        return "digit_ratio"
    if has_boilerplate(scanned.key, rules.boilerplate_markers):
        return "boilerplate"
    # Gopher's repetition signal: the share of the letters that the most frequent word bigram covers
    if scanned.top_bigram_letters / max(scanned.letters, 1) > rules.max_top_ngram_fraction:
        return "top_ngram_repetition"
    if "\n\n" in text:
        paragraphs = [paragraph.strip() for paragraph in text.split("\n\n") if paragraph.strip()]
        if len(paragraphs) > 1 and _duplicate_fraction(paragraphs) > rules.max_duplicate_paragraph_fraction:
            return "duplicate_paragraphs"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) >= MIN_LINES_FOR_LINE_RULES:
        if _duplicate_fraction(lines) > rules.max_duplicate_line_fraction:
            return "duplicate_lines"
        punctuated = sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines) / len(lines)
        if punctuated < rules.min_punctuated_line_fraction:
            return "punctuated_lines"
    return None


def failed_chat_rule(messages: list[dict], rules: Filter) -> str | None:
    answer_words = sum(len(words(m["content"])) for m in messages if m["role"] == "assistant")
    if answer_words == 0:
        return "word_count"
    if any(has_boilerplate(dedup_key(m["content"]).encode("utf-8"), rules.boilerplate_markers) for m in messages):
        return "boilerplate"
    return None
