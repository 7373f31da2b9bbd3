"""Is this Turkish? One decision for a row's texts: Turkish or not, and what it was instead.

A language detector only chooses among the languages it is given, so a language outside its list falls into the
closest one: lingua among Turkish and a few neighbours calls Polish, Latvian, Bosnian or Malay Turkish, and lingua
over all its 75 languages still has no Crimean Tatar, Turkmen, Uzbek or Kurdish (and costs ~3x per Turkish text,
~6x per English one). Turkish is told instead by what it writes, which holds for every language, listed or not;
the counts come from one table lookup per character of the whole text:

1. script: more letters of another script than Latin ones -> not Turkish, labelled by that script ("cyrillic",
   "arabic", "greek", "cjk"...): Russian, Kazakh, Kyrgyz, Tatar, Uyghur, Persian, Sorani...;
2. Turkish's own letters: ç ğ ı ö ş ü (and their capitals but I) are about one Latin letter in ten of Turkish
   (7.5 % or more in 95 % of the benchmark's Turkish documents: bench/langid); under
   `filter.min_turkish_letter_fraction` -> not Turkish: English, German, Malay, Uzbek... and Turkish typed without
   its letters;
3. letters Turkish never writes: distinct words, not capitalised, that hold a Latin letter outside the Turkish
   alphabet (ə of Azerbaijani; ä ň ý ž of Turkmen; q ñ of Crimean Tatar; ê of Kurmanji; ł ą ę of Polish; ā ē ī ū
   of Latvian; č ć đ of Bosnian...; not w and x, which Turkish writes in borrowed technical words): at least
   `filter.min_foreign_words` of them and more than `filter.max_foreign_word_fraction` of the words -> not Turkish.
   Words rather than letters, and capitalised words not at all, so that a quoted name ("Kärcher", "España",
   "Džeko", "Łódź") leaves a text Turkish.

A text with fewer than `filter.letter_rule_min_letters` Latin letters (a short question, a chat turn) holds too
few letters for rule 2's fraction to mean much: rule 3 still applies, then the detector (`filter.language_detector`: lingua among
`filter.candidate_languages`, or langdetect) judges it on `filter.language_sample_chars` characters, Turkish at a
confidence of `filter.min_turkish_confidence` or more. A chat is Turkish when every judged turn is, and rules 2
and 3 also read its turns together (short Turkmen turns that each pass add up).

A rejected Latin-script text is named by the detector's best guess on its sample, so a report can count what was
thrown away per language; where the detector's best guess is Turkish, the label is the rule instead
("few_turkish_letters": Turkish without its letters, a list of place names; "foreign_words": Crimean Tatar,
Turkmen, Gagauz...). No letters at all: "unknown". bench/language_benchmark.py measures this decision against the
alternatives on real text in 123 languages.
"""
from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np

from pipeline.errors import PipelineError
from pipeline.params import Filter

TURKISH = "tr"
TURKISH_OWN = "çğıöşüÇĞİÖŞÜ"
TURKISH_ALPHABET = "abcdefghijklmnoprstuvyzâîûABCDEFGHIJKLMNOPRSTUVYZÂÎÛ" + TURKISH_OWN + "wxWX"  # w x: borrowed words
SPACE, ALPHABET, OWN, FOREIGN = 1, 2, 3, 4  # classes of the table (0: neither a letter nor a space)
FIRST_SCRIPT = 5  # letters of other scripts, one class each from here
LETTERS = {"Lu", "Ll", "Lt", "Lo"}  # not modifier letters (Uzbek's ʻ counts with the word it sits in)
PUNCTUATION = "\"'“”‘’«»()[]{}<>.,;:!?-–—/*_"


class Verdict(NamedTuple):
    turkish: bool
    label: str  # "tr" when Turkish; otherwise the language or reason that decided it


@lru_cache(maxsize=1)
def letter_table() -> tuple[np.ndarray, tuple[str, ...]]:
    """Each code point's class, and the names of the scripts from FIRST_SCRIPT on. Built from Unicode's names
    once per process (~0.5 s of CPU); the filter builds it before its workers fork."""
    table = np.zeros(sys.maxunicode + 1, dtype=np.uint8)
    scripts: dict[str, int] = {}
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    for match in re.finditer(r"\s", everything):
        table[ord(match.group())] = SPACE
    for match in re.finditer(r"[^\W\d_]", everything):  # one regular-expression pass finds the letters' candidates
        char = match.group()
        if unicodedata.category(char) not in LETTERS:
            continue
        script = unicodedata.name(char, "UNKNOWN UNKNOWN").split()[0]
        if script == "LATIN":
            table[ord(char)] = OWN if char in TURKISH_OWN else ALPHABET if char in TURKISH_ALPHABET else FOREIGN
        else:
            if script not in scripts and len(scripts) < 255 - FIRST_SCRIPT:
                scripts[script] = FIRST_SCRIPT + len(scripts)
            table[ord(char)] = scripts.get(script, 255)
    return table, tuple(name.lower() for name in scripts) + ("other",) * (256 - FIRST_SCRIPT - len(scripts))


def letter_classes(text: str) -> np.ndarray:
    """Each character's class (SPACE, ALPHABET, OWN, FOREIGN, a script's)."""
    table, _ = letter_table()
    return table.take(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32))


def letter_counts(text: str) -> np.ndarray:
    """Characters of `text` per class (indexed by class)."""
    return np.bincount(letter_classes(text), minlength=256)


def foreign_words(text: str, classes: np.ndarray) -> tuple[set[str], int]:
    """The distinct words of `text` that hold a FOREIGN letter and do not start with a capital, and the number of
    words. Words are whitespace-separated, found from the classes (a regular expression over the text cost more
    than the rest of the decision)."""
    spaces = np.flatnonzero(classes == SPACE)
    space = classes == SPACE
    count = int(np.count_nonzero(space[:-1] & ~space[1:])) + int(len(space) > 0 and not space[0])
    at = np.searchsorted(spaces, np.flatnonzero(classes == FOREIGN))
    starts = np.where(at > 0, spaces[np.maximum(at - 1, 0)] + 1 if len(spaces) else 0, 0)
    ends = np.where(at < len(spaces), spaces[np.minimum(at, len(spaces) - 1)] if len(spaces) else len(text),
                    len(text))
    found = set()
    for start, end in set(zip(starts.tolist(), ends.tolist())):
        word = text[start:end].strip(PUNCTUATION)
        if word and not word[0].isupper():
            found.add(word)
    return found, count


def sample(text: str, chars: int) -> str:
    """`chars` characters from the middle of a text, cut at spaces: a detector's cost grows with the length it
    reads and a few sentences decide; the middle skips headers and menus at the start."""
    if len(text) <= chars:
        return text
    start = text.find(" ", (len(text) - chars) // 2) + 1
    end = text.rfind(" ", start, start + chars)
    return text[start:end if end > start else start + chars]


class TurkishDetector:
    """Built once per process (the filter builds it before its workers fork: the models and tables are shared);
    `decide` is the whole decision."""

    def __init__(self, rules: Filter):
        self.kind, self.min_confidence, self.sample_chars = (rules.language_detector, rules.min_turkish_confidence,
                                                             rules.language_sample_chars)
        self.min_letters = rules.letter_rule_min_letters
        self.min_own_fraction = rules.min_turkish_letter_fraction
        self.min_foreign_words, self.max_foreign_fraction = rules.min_foreign_words, rules.max_foreign_word_fraction
        _, self.scripts = letter_table()
        if self.kind == "lingua":
            from lingua import Language, LanguageDetectorBuilder

            candidates = rules.candidate_languages
            unknown = [name for name in candidates if not hasattr(Language, name)]
            if unknown or "TURKISH" not in candidates:
                raise PipelineError(
                    f"filter.candidate_languages: needs TURKISH and lingua language names; unknown: {unknown}"
                )
            self._turkish = Language.TURKISH
            self._lingua = LanguageDetectorBuilder.from_languages(
                *[getattr(Language, name) for name in candidates]).with_preloaded_language_models().build()
        else:
            from langdetect import DetectorFactory

            DetectorFactory.seed = 0  # langdetect is random unless seeded

    def decide(self, texts: Sequence[str]) -> Verdict:
        """Turkish when every text is (a chat: its user and assistant turns); otherwise the first text's reason.
        Computed in this thread: the filter's worker processes call it (lingua's multi-threaded batch call is not
        safe to use across fork)."""
        for text in texts:
            verdict = self._text(text)
            if not verdict.turkish:
                return verdict
        if len(texts) > 1:
            joined = "\n".join(texts)
            rule = self._letter_rules(joined, letter_classes(joined))
            if rule:
                return Verdict(False, self._name(joined, rule))
        return Verdict(True, TURKISH)

    def _text(self, text: str) -> Verdict:
        classes = letter_classes(text)
        counts = np.bincount(classes, minlength=256)
        found = counts.tolist()  # Python numbers: faster than numpy's for the few sums below
        latin = found[ALPHABET] + found[OWN] + found[FOREIGN]
        other = len(classes) - found[0] - found[SPACE] - latin
        if latin + other == 0:
            return Verdict(False, "unknown")
        if other > latin:
            return Verdict(False, self.scripts[int(np.argmax(counts[FIRST_SCRIPT:]))])
        rule = self._letter_rules(text, classes, found)
        if rule:
            return Verdict(False, self._name(text, rule))
        if latin < self.min_letters:
            return self._detected(sample(text, self.sample_chars))
        return Verdict(True, TURKISH)

    def _letter_rules(self, text: str, classes: np.ndarray, counts: list[int] | None = None) -> str | None:
        """Rules 2 and 3 (module docstring): the rule a text breaks, or None. Rule 2 needs enough letters; rule 3
        counts words, which a short text has few of, so a handful of Turkmen words is enough."""
        counts = np.bincount(classes, minlength=256).tolist() if counts is None else counts
        latin = counts[ALPHABET] + counts[OWN] + counts[FOREIGN]
        if latin >= self.min_letters and counts[OWN] < self.min_own_fraction * latin:
            return "few_turkish_letters"
        if counts[FOREIGN] >= self.min_foreign_words:  # most Turkish has none: no words to look at
            found, words = foreign_words(text, classes)
            if len(found) >= self.min_foreign_words and len(found) > self.max_foreign_fraction * words:
                return "foreign_words"
        return None

    def _detected(self, text: str) -> Verdict:
        """The detector alone, for a text too short for the letter rules."""
        if self.kind == "lingua":
            confidence = self._lingua.compute_language_confidence(text, self._turkish)
        else:
            confidence = next((guess.prob for guess in self._langdetect(text) if guess.lang == TURKISH), 0.0)
        if confidence >= self.min_confidence:
            return Verdict(True, TURKISH)
        return Verdict(False, self._name(text, "unknown", sampled=True))

    def _name(self, text: str, rule: str, sampled: bool = False) -> str:
        """The detector's best guess for a rejected text; the rule where that guess is Turkish or none."""
        text = text if sampled else sample(text, self.sample_chars)
        if self.kind == "lingua":
            found = self._lingua.detect_language_of(text)
            name = found.iso_code_639_1.name.lower() if found is not None else None
        else:
            guesses = self._langdetect(text)
            name = guesses[0].lang if guesses else None
        return rule if name in (None, TURKISH) else name

    @staticmethod
    def _langdetect(text: str) -> list:
        from langdetect import detect_langs
        from langdetect.lang_detect_exception import LangDetectException

        try:
            return detect_langs(text)
        except LangDetectException:  # no letters at all
            return []
