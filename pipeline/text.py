"""Turkish-aware text normalisation: NFC, Turkish case folding, words."""
from __future__ import annotations

import string
import unicodedata

# Punctuation stripped from the ends of whitespace-separated tokens; inside a token it stays ("Türkiye'nin"
# is one word). A \w+ regular expression gave nearly the same words at twice the cost.
PUNCTUATION = string.punctuation + "«»“”‘’„…–—·•"


def normalise(text: str) -> str:
    """NFC, so that the same Turkish letter is always the same code point; trailing spaces and CRs dropped."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def turkish_casefold(text: str) -> str:
    # str.lower() maps "I" to "i" and "İ" to "i̇" (with a combining dot); Turkish pairs are I/ı and İ/i.
    # Final sigma is σ, as in str.casefold(): lower() writes ς at a word's end, the one mapping that depends on
    # its neighbours; without it folding goes code point by code point (pipeline.wordscan relies on that).
    # (str.replace, not str.translate: translate with a mapping was the filter's slowest call.)
    return text.replace("I", "ı").replace("İ", "i").lower().replace("ς", "σ")


def words(text: str) -> list[str]:
    return list(filter(None, [token.strip(PUNCTUATION) for token in text.split()]))


def dedup_key(text: str) -> str:
    """The form two texts share when they are the same text: folded case, single spaces."""
    return " ".join(words(turkish_casefold(normalise(text))))
