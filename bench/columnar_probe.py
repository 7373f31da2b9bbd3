"""Would a compiled columnar engine close the filter's gap to 15x per core? A probe, not part of the pipeline.

    pip install polars   # not a project dependency
    POLARS_MAX_THREADS=1 python bench/columnar_probe.py

Computes, for Turkish pages of the benchmark corpus, what the filter's words and quality rules compute in Python
(Turkish case folding, words with punctuation stripped from their ends, the dedup key, symbol and digit counts,
duplicate and punctuated lines, boilerplate markers) with polars' string kernels over a row group at a time, on
one thread, and the same in Python (pipeline.text.words + pipeline.quality.failed_rule). The top-bigram rule is
left out of the columnar side (its tie-breaking is the fiddly part), and so is bringing the tokens back to Python,
which it would need: both are timed apart. Writes bench/results/columnar_probe.json (CPU microseconds a page,
best of three, and whether keys and symbol counts agree with Python's).
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.filter_throughput import corpus  # noqa: E402
from bench.record import save  # noqa: E402


def columnar(texts: list[str], markers: list[str]):
    import polars as pl

    from pipeline.text import PUNCTUATION

    folded = (pl.col("text").str.replace_all("I", "ı", literal=True).str.replace_all("İ", "i", literal=True)
              .str.to_lowercase())
    tokens = (folded.str.replace_all(r"\s+", " ").str.strip_chars().str.split(" ")
              .list.eval(pl.element().str.strip_chars(PUNCTUATION)).list.eval(pl.element().filter(pl.element() != "")))
    lines = pl.col("text").str.split("\n").list.eval(pl.element().str.strip_chars())
    return pl.DataFrame({"text": texts}).with_columns(tokens=tokens).with_columns(
        key=pl.col("tokens").list.join(" "),
        words=pl.col("tokens").list.len(),
        symbols=pl.col("text").str.count_matches(r"[^\w\s.,;:!?'\"()\-–—«»“”’]|_"),
        digits=pl.col("text").str.count_matches(r"[0-9]"),
        lines=lines.list.eval(pl.element().filter(pl.element() != "")),
    ).with_columns(
        duplicated_lines=pl.col("lines").list.eval(pl.element().is_duplicated().sum()).list.first(),
        punctuated_lines=pl.col("lines").list.eval(pl.element().str.contains(r"[.!?…\"”»:;]$").sum()).list.first(),
        boilerplate=pl.any_horizontal([pl.col("key").str.contains(m, literal=True) for m in markers]),
    )


def best_of_three(work) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    import polars as pl

    from pipeline.params import load
    from pipeline.quality import SYMBOL, _top_bigram_fraction, failed_rule
    from pipeline.text import normalise, turkish_casefold, words

    rules = load(ROOT / "params.yaml").filter
    pages = [normalise(text) for label, text in corpus(3000) if label == "tr"][:2048]
    groups = [pages[i : i + 1024] for i in range(0, len(pages), 1024)]
    tokens = [words(turkish_casefold(page)) for page in pages]
    table = columnar(groups[0], rules.boilerplate_markers)

    def in_python():
        for page in pages:
            failed_rule(page, rules, words(turkish_casefold(page)))

    per_page = 1e6 / len(pages)
    result = {
        "machine": f"{platform.machine()}, {platform.python_version()}, polars {pl.__version__}, one thread",
        "pages": len(pages),
        "microseconds_per_page": {
            "python_words_and_rules": round(best_of_three(in_python) * per_page, 1),
            "polars_words_and_rules_without_top_bigram": round(
                best_of_three(lambda: [columnar(group, rules.boilerplate_markers) for group in groups]) * per_page, 1),
            "python_top_bigram_alone": round(best_of_three(
                lambda: [_top_bigram_fraction(t, 1000) for t in tokens]) * per_page, 1),
            "tokens_back_to_python": round(best_of_three(lambda: table["tokens"].to_list()) * 1e6 / len(groups[0]), 1),
        },
        "keys_agree": sum(key == " ".join(words(turkish_casefold(page)))
                          for key, page in zip(table["key"].to_list(), groups[0])),
        "symbol_counts_agree": sum(count == len(SYMBOL.findall(page))
                                   for count, page in zip(table["symbols"].to_list(), groups[0])),
        "of": len(groups[0]),
    }
    print(result)
    save("columnar_probe", result)


if __name__ == "__main__":
    main()
