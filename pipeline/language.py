"""Is this Turkish? Language identification with lingua (default) or langdetect.

lingua is restricted to `filter.candidate_languages`, which includes Turkish's close neighbours
(Azerbaijani, Kazakh) so that they are recognised as themselves instead of as Turkish; langdetect has no
Azerbaijani and calls most of it Turkish (measured: ../shared/reference/environment.md).

lingua has no Turkmen, Uzbek, Gagauz, Crimean Tatar or Kurdish, and calls Turkmen Turkish (all 1,000 Turkmen
documents in bench/results/language_sample.json) and Kurmanji Kurdish often too (tests/test_filter.py); the Uzbek
and Crimean Tatar texts of the tests it rejects on its own. These languages write letters Turkish does not
(`filter.non_turkish_letters`: Turkmen ä ň ý ž, Crimean Tatar ñ, Uzbek ʻ, Azerbaijani ə, Kurmanji ê), so a
text whose sample has at least `filter.min_non_turkish_letters` of them, and more than
`filter.max_non_turkish_letter_fraction` of its characters, is not Turkish, whatever the detector says.
The count keeps a foreign name quoted in Turkish ("Kärcher", "España", "Džeko") from sinking a short question.
"""
from __future__ import annotations

from typing import Sequence

from pipeline.errors import PipelineError
from pipeline.params import Filter


def sample(text: str, chars: int) -> str:
    """`chars` characters from the middle of a text, cut at spaces: lingua's cost grows with the length it
    reads and a few sentences decide; the middle skips headers and menus at the start."""
    if len(text) <= chars:
        return text
    start = text.find(" ", (len(text) - chars) // 2) + 1
    end = text.rfind(" ", start, start + chars)
    return text[start:end if end > start else start + chars]


class TurkishDetector:
    def __init__(self, rules: Filter):
        self.kind, self.min_confidence, self.sample_chars = (rules.language_detector, rules.min_turkish_confidence,
                                                             rules.language_sample_chars)
        self.non_turkish_letters = rules.non_turkish_letters
        self.min_non_turkish, self.max_non_turkish_fraction = (rules.min_non_turkish_letters,
                                                               rules.max_non_turkish_letter_fraction)
        candidates = rules.candidate_languages
        if self.kind == "lingua":
            from lingua import Language, LanguageDetectorBuilder

            unknown = [name for name in candidates if not hasattr(Language, name)]
            if unknown or "TURKISH" not in candidates:
                raise PipelineError(
                    f"filter.candidate_languages: needs TURKISH and lingua language names; unknown: {unknown}"
                )
            languages = [getattr(Language, name) for name in candidates]
            self._turkish = Language.TURKISH
            self._lingua = LanguageDetectorBuilder.from_languages(*languages).with_preloaded_language_models().build()
        else:
            from langdetect import DetectorFactory

            DetectorFactory.seed = 0  # langdetect is random unless seeded

    def writes_non_turkish_letters(self, text: str) -> bool:
        folded = text.lower()
        found = sum(map(folded.count, self.non_turkish_letters))
        return found >= self.min_non_turkish and found > self.max_non_turkish_fraction * len(text)

    def confidence(self, text: str) -> float:
        """Confidence that one text is Turkish, in [0, 1], computed in this thread: the filter's worker
        processes call this (lingua's multi-threaded batch call is not safe to use across fork)."""
        text = sample(text, self.sample_chars)
        if self.writes_non_turkish_letters(text):
            return 0.0
        if self.kind == "lingua":
            return self._lingua.compute_language_confidence(text, self._turkish)
        return self._langdetect(text)

    def confidences(self, texts: Sequence[str]) -> list[float]:
        """Confidence that each text is Turkish; lingua's batch API spreads the texts over all cores."""
        samples = [sample(text, self.sample_chars) for text in texts]
        judged = [i for i, text in enumerate(samples) if not self.writes_non_turkish_letters(text)]
        scores = [0.0] * len(samples)
        if self.kind == "lingua":
            found = self._lingua.compute_language_confidence_in_parallel([samples[i] for i in judged], self._turkish)
        else:
            found = [self._langdetect(samples[i]) for i in judged]
        for i, score in zip(judged, found):
            scores[i] = score
        return scores

    @staticmethod
    def _langdetect(text: str) -> float:
        from langdetect import detect_langs
        from langdetect.lang_detect_exception import LangDetectException

        try:
            return next((guess.prob for guess in detect_langs(text) if guess.lang == "tr"), 0.0)
        except LangDetectException:  # no letters at all
            return 0.0

    def is_turkish(self, texts: Sequence[str]) -> list[bool]:
        return [score >= self.min_confidence for score in self.confidences(texts)]

    def all_turkish(self, texts: Sequence[str]) -> bool:
        """Every text Turkish; stops at the first that is not (a chat's English answer). The letter rule also
        reads the texts together: a chat's short turns may each hold too few letters to count."""
        if len(texts) > 1 and self.writes_non_turkish_letters("\n".join(texts)):
            return False
        return all(self.confidence(text) >= self.min_confidence for text in texts)
