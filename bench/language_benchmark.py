"""Turkish precision and recall of language decisions on real text in 123 languages (bench/langid/).

    python bench/language_benchmark.py [--options decision,current,...]

Each option judges every benchmark document (a text, or a chat's turns: Turkish only when every turn is) and is
scored on the documents' labels: Turkish precision (kept documents that are Turkish) and recall (Turkish
documents kept), the documents of each other language kept as Turkish (leaks), the Turkish documents lost, and
CPU microseconds per document on one core (process time, Turkish and other documents apart; lingua's models
loaded before the clock starts). The options:
- decision: pipeline.language.TurkishDetector.decide with params.yaml's filter block (what the filter runs);
- current: the decision this replaced: lingua among params' former nine candidates on 160 characters from the
  middle, confidence >= 0.5, and a text with at least 3 of "äňýžəñʻê" making more than 1 % of its sample not Turkish;
- lingua_all: lingua over all 75 of its languages on the same sample, Turkish when it is its best guess;
- function_words: FineWeb-2's stop-word rule with Turkish function words (at least 2 in the text);
- letters: the decision's letter rules alone (no detector: a short text that breaks no rule passes);
- cascade_lingua: the letter rules, then lingua among the decision's candidates on the sample must say Turkish.
Writes bench/results/language-benchmark.json.
"""
from __future__ import annotations

import argparse
import gzip
import json
import platform
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import save  # noqa: E402

CORPUS = ROOT / "bench/langid/benchmark.jsonl.gz"
FORMER_CANDIDATES = ["TURKISH", "AZERBAIJANI", "KAZAKH", "ENGLISH", "GERMAN", "FRENCH", "RUSSIAN", "ARABIC", "PERSIAN"]
FORMER_LETTERS = "äňýžəñʻê"
# FineWeb-2's Turkish stop words, as its filter lists them first (the rule: at least 2 in a document)
STOP_WORDS = {"ve", "bir", "olarak", "bu", "ile", "için", "olan", "da", "de", "tarafından", "yılında", "sonra", "en",
              "daha", "ilk", "ise", "gibi", "kadar", "çok", "her", "veya", "ya", "ki", "ancak", "olduğu"}


def load() -> list[dict]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def rules():
    from pipeline.params import load as load_params

    return load_params(ROOT / "params.yaml").filter


def lingua(names: list[str] | None):
    from lingua import Language, LanguageDetectorBuilder

    builder = (LanguageDetectorBuilder.from_languages(*[getattr(Language, n) for n in names]) if names
               else LanguageDetectorBuilder.from_all_languages())
    return builder.with_preloaded_language_models().build()


def option_decision():
    from pipeline.language import TurkishDetector

    detector = TurkishDetector(rules())
    return lambda texts: tuple(detector.decide(texts))


def option_current():
    from lingua import Language

    from pipeline.language import sample

    detector = lingua(FORMER_CANDIDATES)

    def letters(text: str) -> bool:
        folded = text.lower()
        found = sum(map(folded.count, FORMER_LETTERS))
        return found >= 3 and found > 0.01 * len(text)

    def turkish(text: str) -> bool:
        text = sample(text, 160)
        return not letters(text) and detector.compute_language_confidence(text, Language.TURKISH) >= 0.5

    def decide(texts):
        ok = not (len(texts) > 1 and letters("\n".join(texts))) and all(map(turkish, texts))
        return ok, "tr" if ok else "other"

    return decide


def option_lingua_all():
    from lingua import Language

    from pipeline.language import sample

    detector = lingua(None)

    def decide(texts):
        for text in texts:
            found = detector.detect_language_of(sample(text, 160))
            if found != Language.TURKISH:
                return False, found.iso_code_639_1.name.lower() if found else "unknown"
        return True, "tr"

    return decide


def option_function_words():
    words = re.compile(r"\w+")

    def decide(texts):
        ok = all(sum(word in STOP_WORDS for word in words.findall(text.lower())) >= 2 for text in texts)
        return ok, "tr" if ok else "other"

    return decide


def letter_rules_only(detector, texts) -> tuple[bool, str]:
    import numpy as np

    from pipeline.language import ALPHABET, FIRST_SCRIPT, letter_classes

    for text in [*texts, "\n".join(texts)] if len(texts) > 1 else texts:
        classes = letter_classes(text)
        counts = np.bincount(classes, minlength=256)
        latin, other = counts[ALPHABET:FIRST_SCRIPT].sum(), counts[FIRST_SCRIPT:].sum()
        if latin + other == 0 or other > latin:
            return False, "script"
        rule = detector._letter_rules(text, classes, counts.tolist())
        if rule:
            return False, rule
    return True, "tr"


def option_letters():
    from pipeline.language import TurkishDetector

    detector = TurkishDetector(rules())
    return lambda texts: letter_rules_only(detector, texts)


def option_cascade_lingua():
    from lingua import Language

    from pipeline.language import TurkishDetector, sample

    settings = rules()
    detector, narrow = TurkishDetector(settings), lingua(settings.candidate_languages)

    def decide(texts):
        verdict = letter_rules_only(detector, texts)
        if not verdict[0]:
            return verdict
        for text in texts:
            if narrow.compute_language_confidence(sample(text, 160), Language.TURKISH) < settings.min_turkish_confidence:
                return False, "lingua"
        return True, "tr"

    return decide


OPTIONS = {"decision": option_decision, "current": option_current, "lingua_all": option_lingua_all,
           "function_words": option_function_words, "letters": option_letters,
           "cascade_lingua": option_cascade_lingua}


def score(docs: list[dict], verdicts: list[tuple[bool, str]], seconds: dict) -> dict:
    kept = [ok for ok, _ in verdicts]
    positives = sum(doc["turkish"] for doc in docs)
    true = sum(ok and doc["turkish"] for ok, doc in zip(kept, docs))
    false = sum(ok and not doc["turkish"] for ok, doc in zip(kept, docs))
    leaks = Counter(doc["lang"] if doc["kind"] == "text" else f"{doc['lang']} ({doc['kind']})"
                    for ok, doc in zip(kept, docs) if ok and not doc["turkish"])
    lost = Counter(doc["kind"] if doc["kind"] != "text" else f"text: {doc['origin']['package']}"
                   for ok, doc in zip(kept, docs) if not ok and doc["turkish"])
    turkish_docs = positives
    return {"precision": round(true / max(true + false, 1), 4), "recall": round(true / positives, 4),
            "kept_turkish": true, "kept_other": false, "turkish_lost": positives - true,
            "leaks_per_language": dict(leaks.most_common()), "turkish_lost_per_source": dict(lost.most_common()),
            "microseconds_per_turkish_document": round(seconds["tr"] / turkish_docs * 1e6, 1),
            "microseconds_per_other_document": round(seconds["other"] / (len(docs) - turkish_docs) * 1e6, 1)}


def labels(docs: list[dict], verdicts: list[tuple[bool, str]]) -> dict:
    """What the decision calls each language's rejected documents: its most frequent labels."""
    seen = defaultdict(Counter)
    for doc, (ok, label) in zip(docs, verdicts):
        if not ok and not doc["turkish"] and doc["kind"] == "text":
            seen[doc["lang"]][label] += 1
    return {lang: dict(found.most_common(3)) for lang, found in sorted(seen.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--name", default="language-benchmark", help="bench/results/NAME.json")
    args = parser.parse_args()
    docs = load()
    result = {"machine": f"{platform.machine()}, Python {platform.python_version()}, one process",
              "corpus": {"documents": len(docs), "turkish": sum(d["turkish"] for d in docs),
                         "languages": len({d["lang"] for d in docs}),
                         "scripts": dict(Counter(d["script"] for d in docs).most_common()),
                         "kinds": dict(Counter(d["kind"] for d in docs).most_common()),
                         # a language missing from an option's leaks_per_language had none kept as Turkish
                         "documents_per_language": dict(sorted(Counter(d["lang"] for d in docs).items()))},
              "options": {}}
    for name in args.options.split(","):
        decide = OPTIONS[name]()
        verdicts, seconds = [], {"tr": 0.0, "other": 0.0}
        for doc in docs:
            start = time.process_time()
            verdicts.append(decide(doc["texts"]))
            seconds["tr" if doc["turkish"] else "other"] += time.process_time() - start
        result["options"][name] = score(docs, verdicts, seconds)
        if name == "decision":
            result["decision_labels_of_rejected_documents"] = labels(docs, verdicts)
        print(name, {k: v for k, v in result["options"][name].items() if "per_" not in k or "micro" in k},
              flush=True)
    save(args.name, result)


if __name__ == "__main__":
    main()
