"""Does a row stay? The filter's judgement of one row, on its own (dedup, which needs every earlier row, is the
stage's). The rules run in this order, and the first that fails names the drop (its counter in reports/filter.json):

1. `language`   - every judged text (a text row's text; a chat's user and assistant turns) is Turkish;
                  the language seen is counted too, so a user sees what was thrown away;
2. quality      - pipeline.quality, in its order: word_count, mean_word_length, symbol_ratio, digit_ratio,
                  boilerplate, top_ngram_repetition, duplicate_paragraphs, duplicate_lines, punctuated_lines
                  (chats: word_count and boilerplate);
3. `decontamination` - a training row sharing an n-gram with an evaluation text.
A row that passes gets its split and what dedup compares (the digest of its folded words, its MinHash bands).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.decontaminate import Contamination
from pipeline.dedup import Sketch, digest, sketch
from pipeline.language import TurkishDetector
from pipeline.params import Filter
from pipeline.quality import failed_chat_rule, failed_rule
from pipeline.rows import ROWS
from pipeline.text import normalise
from pipeline.wordscan import scan

JUDGED_ROLES = ("user", "assistant")  # system prompts are instructions, often English by convention


@dataclass(frozen=True)
class Judge:
    """What the rules need besides the row, made once per stage before the workers fork (models loaded)."""

    rules: Filter
    language: TurkishDetector
    contamination: Contamination
    banding: tuple[int, int]  # LSH bands x rows per band of the dedup index (filter.minhash_bands, _rows)


@dataclass(frozen=True)
class Verdict:
    drop: str | None  # the rule that dropped the row, None for a candidate
    language: str | None = None  # for a language drop: the language (or script) seen
    split: str | None = None
    digest: bytes | None = None
    sketch: Sketch | None = None


@dataclass(frozen=True)
class Judged:
    """A batch's verdicts: each row's drop rule (None for a candidate) and language seen when dropped for it;
    for the candidates, in row order, their normalised rows as one Arrow table (built in the worker, it crosses
    to the stage and into parquet without a Python object per row), splits, digests and MinHash sketches."""

    drops: list[str | None]
    languages: list[str | None]
    candidates: pa.Table
    splits: list[str]
    digests: list[bytes]
    signatures: np.ndarray  # candidates x permutations
    bands: np.ndarray  # candidates x LSH bands

    def sketch(self, candidate: int) -> Sketch:
        return Sketch(self.signatures[candidate], self.bands[candidate])


def is_validation(row: dict, fraction: float) -> bool:
    """The split is a hash of source and id: stable across runs, and known before filtering."""
    key = hashlib.sha1(f"{row['source']}\x1f{row['id']}".encode("utf-8")).digest()
    return int.from_bytes(key[:8], "big") / 2**64 < fraction


def normalised(row: dict) -> dict:
    if row["kind"] == "text":
        return {**row, "text": normalise(row["text"])}
    return {**row, "messages": [{**m, "content": normalise(m["content"])} for m in row["messages"]]}


def judged_texts(row: dict) -> list[str]:
    if row["kind"] == "text":
        return [row["text"]]
    return [m["content"] for m in row["messages"] if m["role"] in JUDGED_ROLES]


def dedup_text(row: dict) -> str:
    """What dedup and decontamination compare. A chat's system prompt is left out: it is shared boilerplate,
    and chats that share a long one are neither near duplicates nor contaminated by a validation chat with it."""
    return "\n".join(judged_texts(row))


def judge_after_language(row: dict, judge: Judge) -> Verdict:
    """Rules 2 and 3 and dedup's keys, for a normalised row that passed language ID."""
    rules = judge.rules
    scanned = scan(dedup_text(row), rules.decontamination_ngram)  # words, counts and n-grams in one pass
    rule = failed_rule(row["text"], rules, scanned) if row["kind"] == "text" else failed_chat_rule(row["messages"],
                                                                                                   rules)
    if rule:
        return Verdict(rule)
    split = "validation" if is_validation(row, rules.validation_fraction) else "train"
    if split == "train" and judge.contamination.contaminated(scanned.ngrams):
        return Verdict("decontamination")
    return Verdict(None, split=split, digest=digest(scanned.key),
                   sketch=sketch(scanned.shingles, rules.minhash_permutations, *judge.banding))


def judge_rows(rows: list[dict], judge: Judge) -> Judged:
    """Every row of a batch judged. Language ID goes over all the rows first (most web text that fails, fails
    it): lingua's model tables then stay in the CPU cache between rows instead of alternating with the other
    rules' data."""
    rows = [normalised(row) for row in rows]
    languages = [judge.language.decide(judged_texts(row)) for row in rows]
    verdicts = [judge_after_language(row, judge) if turkish else Verdict("language", language=seen)
                for row, (turkish, seen) in zip(rows, languages)]
    candidates = [(row, verdict) for row, verdict in zip(rows, verdicts) if verdict.drop is None]
    return Judged(drops=[verdict.drop for verdict in verdicts],
                  languages=[verdict.language for verdict in verdicts],
                  candidates=pa.Table.from_pylist([row for row, _ in candidates], schema=ROWS),
                  splits=[verdict.split for _, verdict in candidates],
                  digests=[verdict.digest for _, verdict in candidates],
                  signatures=np.stack([verdict.sketch.signature for _, verdict in candidates]) if candidates
                  else np.zeros((0, judge.rules.minhash_permutations), dtype=np.uint8),
                  bands=np.stack([verdict.sketch.bands for _, verdict in candidates]) if candidates
                  else np.zeros((0, judge.banding[0]), dtype=np.uint64))
