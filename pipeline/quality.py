"""Document quality rules in the spirit of Gopher, C4 and FineWeb; each has its own param and drop counter.

`failed_rule(text, params, tokens)` returns the name of the first rule a text fails, or None. Rules that
judge lines (duplicate lines, punctuated lines) apply only to texts with several lines; chats get the length
and boilerplate rules only (`failed_chat_rule`).
"""
from __future__ import annotations

import re
from collections import Counter

from pipeline.params import Filter
from pipeline.text import dedup_key, turkish_casefold, words

TERMINAL_PUNCTUATION = (".", "!", "?", "…", '"', "”", "»", ":", ";")
MIN_LINES_FOR_LINE_RULES = 3


# A symbol is what this matches: not a letter, digit, space or common punctuation (underscore is \w, yet a symbol).
SYMBOL = re.compile(r"[^\w\s.,;:!?'\"()\-–—«»“”’]|_")
# The ASCII characters SYMBOL does not match. Deleting them from a page's UTF-8 bytes (bytes.translate, one C
# pass) leaves a short remainder, the non-ASCII letters and the symbols, for the regular expression: run over
# the whole page it was the rules' largest cost. Dropping ASCII bytes from UTF-8 leaves valid UTF-8.
_ASCII_NOT_SYMBOL = bytes(c for c in range(128) if not SYMBOL.match(chr(c)))


def character_counts(text: str) -> tuple[int, int, int]:
    """Visible characters (all but spaces, newlines and tabs; at least 1), symbols (SYMBOL) and ASCII digits."""
    data = text.encode("utf-8", "surrogatepass")
    visible = len(text) - (len(data) - len(data.translate(None, b" \n\t")))
    digits = len(data) - len(data.translate(None, b"0123456789"))
    symbols = len(SYMBOL.findall(data.translate(None, _ASCII_NOT_SYMBOL).decode("utf-8", "surrogatepass")))
    return max(visible, 1), symbols, digits


def _duplicate_fraction(items: list[str]) -> float:
    """Share of the items (lines, paragraphs) that occur more than once."""
    counts = Counter(items)
    return sum(n for n in counts.values() if n > 1) / len(items)


def _top_bigram_fraction(tokens: list[str], letters: int) -> float:
    """Share of the `letters` (characters in words) covered by the most frequent word bigram (Gopher's
    repetition signal)."""
    if len(tokens) < 4:
        return 0.0
    bigrams = Counter(zip(tokens, tokens[1:]))
    (first, second), count = bigrams.most_common(1)[0]
    return count * (len(first) + len(second)) / max(letters, 1)


def _boilerplate(folded_words: str, markers: list[str]) -> bool:
    """`folded_words`: a text's Turkish-folded words joined by single spaces, the form markers are kept in
    (pipeline.params folds them at load)."""
    return any(marker in folded_words for marker in markers)


def failed_rule(text: str, rules: Filter, tokens: list[str] | None = None, key: str | None = None) -> str | None:
    """`tokens` are the text's Turkish-case-folded words and `key` the same joined by single spaces (its dedup
    key, what markers are matched against), when the caller has them already: the filter does, and computing
    them twice was a fifth of its time."""
    tokens = words(turkish_casefold(text)) if tokens is None else tokens
    if not tokens or not rules.min_words <= len(tokens) <= rules.max_words:
        return "word_count"
    folded = " ".join(tokens) if key is None else key
    letters = len(folded) - len(tokens) + 1  # a C-level join: summing len() per word cost ~15 %
    mean_length = letters / len(tokens)
    if not rules.min_mean_word_length <= mean_length <= rules.max_mean_word_length:
        return "mean_word_length"
    visible, symbols, digits = character_counts(text)
    if symbols / visible > rules.max_symbol_ratio:
        return "symbol_ratio"
    if digits / visible > rules.max_digit_ratio:
        return "digit_ratio"
    if _boilerplate(folded, rules.boilerplate_markers):
        return "boilerplate"
    if _top_bigram_fraction(tokens, letters) > rules.max_top_ngram_fraction:
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
    if any(_boilerplate(dedup_key(m["content"]), rules.boilerplate_markers) for m in messages):
        return "boilerplate"
    return None
