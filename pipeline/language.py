"""Is this Turkish? Language identification with lingua (default) or langdetect.

lingua is restricted to `filter.candidate_languages`, which includes Turkish's close neighbours
(Azerbaijani, Kazakh) so that they are recognised as themselves instead of as Turkish; langdetect has no
Azerbaijani and calls most of it Turkish (measured: ../shared/reference/environment.md).
"""
from __future__ import annotations

from typing import Sequence

from pipeline.errors import PipelineError

# Language ID needs a few hundred characters; reading whole documents only costs time.
SAMPLE_CHARS = 1500


class TurkishDetector:
    def __init__(self, detector: str, candidates: Sequence[str], min_confidence: float):
        self.kind, self.min_confidence = detector, min_confidence
        if detector == "lingua":
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

    def confidences(self, texts: Sequence[str]) -> list[float]:
        """Confidence that each text is Turkish, in [0, 1]."""
        samples = [text[:SAMPLE_CHARS] for text in texts]
        if self.kind == "lingua":
            return self._lingua.compute_language_confidence_in_parallel(samples, self._turkish)
        return [self._langdetect(sample) for sample in samples]

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
