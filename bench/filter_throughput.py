"""Filter throughput and Turkish precision: the filter stage against the naive path (langdetect on every document).

    python bench/filter_throughput.py --docs 100000 --naive-docs 2000

A generated corpus of labelled documents of web-page length: Turkish (some with boilerplate), written like
demo/make_corpus.py from sentence pools, and 17 other languages at a crawl's shares (`MIX`), from the real
sentences and words of the language-ID benchmark (bench/langid). The filter stage runs for real
(prepare, then filter: language ID, quality rules, exact and near dedup, decontamination) in a temporary
directory; the naive path runs langdetect (seeded) on whole documents, on a sample because it is slow.
Reports documents per second (total and per core), peak memory and Turkish precision (share of kept
documents that are Turkish) to bench/results/filter_throughput.json.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import save  # noqa: E402
from demo.make_corpus import BOILERPLATE, CITIES, WEB_POOLS, city_fields  # noqa: E402
from pipeline.cpus import usable_cpus  # noqa: E402

LANGID = ROOT / "bench/langid/benchmark.jsonl.gz"
# Turkish web text as a crawl's Turkish share brings it: mostly Turkish, some Azerbaijani and English, and a long
# tail of languages a language-ID model mistakes for Turkish (Turkic neighbours; Baltic, South Slavic, Malay and
# Indonesian, Polish) or that other scripts bring; their sentences and words are real text (bench/langid)
MIX = (("tr", 0.68), ("tr_boilerplate", 0.05), ("az", 0.05), ("en", 0.05), ("de", 0.02), ("ru", 0.02),
       ("ar", 0.01), ("fa", 0.01), ("kk", 0.01), ("uz", 0.01), ("tk", 0.01), ("crh", 0.01), ("ku", 0.01),
       ("pl", 0.01), ("lv", 0.01), ("bs", 0.01), ("ms", 0.01), ("id", 0.01), ("fr", 0.01))


def sentence_pools() -> dict[str, list[str]]:
    """Each other language's lines (a translated string or paragraph each) from the language-ID benchmark, in the
    language's usual script (not a variant locale such as English in the Shavian alphabet)."""
    pools: dict[str, list[str]] = {label: [] for label, _ in MIX if not label.startswith("tr")}
    with gzip.open(LANGID, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if doc["kind"] == "text" and doc["lang"] in pools and "@" not in doc["origin"]["locale"]:  # en@shaw
                pools[doc["lang"]] += [text for text in doc["texts"][0].split("\n") if len(text.split()) >= 4]
    return pools


def vocabulary(texts: list[str]) -> list[str]:
    return sorted({w.strip(".,;:!?\"'()") for t in texts for w in t.split()} - {""})


def sentences(rng: random.Random, words: list[str], n: int) -> list[str]:
    """Sentences of the language's own words in random order: its letters and endings, none of another
    document's 13-grams (the sentence pools alone would make every page a near duplicate)."""
    out = []
    for _ in range(n):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
        out.append(sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ".", "?", "!"]))
    return out


def turkish_doc(rng: random.Random, words: list[str]) -> str:
    # a web page: paragraphs of a few pool sentences about a city and many sentences of Turkish words
    paragraphs = []
    for _ in range(rng.randint(3, 7)):
        pool = rng.choice(list(WEB_POOLS.values()))
        first = rng.choice(pool[0]).format(**city_fields(rng.choice(CITIES)))
        paragraphs.append(" ".join([first, *sentences(rng, words, rng.randint(3, 8))]))
    return "\n".join(paragraphs)


def document(label: str, rng: random.Random, words: dict, pools: dict) -> str:
    if label == "tr":
        return turkish_doc(rng, words["tr"])
    if label == "tr_boilerplate":
        return turkish_doc(rng, words["tr"]) + "\n" + rng.choice(BOILERPLATE)
    return "\n".join(" ".join([rng.choice(pools[label]), *sentences(rng, words[label], rng.randint(3, 8))])
                     for _ in range(rng.randint(3, 7)))


def corpus(n: int, seed: int = 0) -> list[tuple[str, str]]:
    return list(documents(n, seed))


def documents(n: int, seed: int = 0) -> Iterator[tuple[str, str]]:
    """corpus(n, seed) one document at a time, for corpora larger than memory."""
    rng = random.Random(seed)
    turkish = [" ".join(options).format(**city_fields(city)) for city in CITIES
               for pool in WEB_POOLS.values() for options in pool]
    pools = sentence_pools()
    words = {"tr": vocabulary(turkish), **{label: vocabulary(pool) for label, pool in pools.items()}}
    labels, weights = zip(*MIX)
    for label in rng.choices(labels, weights, k=n):
        yield label, document(label, rng, words, pools)


def run_filter(docs: list[tuple[str, str]], directory: Path, cpus: int | None = None) -> dict:
    """prepare (once per directory), then filter in a fresh process of its own, for honest peak-memory figures
    (the stage's own process and its largest worker), on the first `cpus` CPUs (an affinity mask, which the
    stage's worker pool follows: pipeline.cpus) or on all."""
    setup = f"""
import json, resource, time, sys, yaml
sys.path.insert(0, {str(ROOT)!r})
from tools.experiment import merged
from pipeline.params import validate
from stages import plan, prepare, filter as filter_stage
raw = merged(yaml.safe_load(open({str(ROOT / 'params.yaml')!r})), json.load(open('overlay.json')))
params = validate(raw, 'bench')
"""
    if not (directory / "data" / "prepared").is_dir():
        source = directory / "web.jsonl"
        with source.open("w", encoding="utf-8") as handle:
            for i, (label, text) in enumerate(docs):
                handle.write(json.dumps({"id": f"{label}-{i}", "text": text}, ensure_ascii=False) + "\n")
        # a budget far beyond the corpus: the plan reads all of it
        overlay = {"budget": {"gpu_hours": 1e6},
                   "data": {"sources": {"web": {"dataset": {"path": str(source), "format": "text"},
                                                "tokens_per_row": 900, "survival": 1.0}}},
                   "evaluate": {"turkish_general_file": str(ROOT / "configs/eval/turkish_general.jsonl"),
                                "english_file": str(ROOT / "configs/eval/english.jsonl")}}
        (directory / "overlay.json").write_text(json.dumps(overlay))
        subprocess.run([sys.executable, "-c", setup + "plan.run(params); prepare.run(params, 'web')"],
                       cwd=directory, check=True, capture_output=True)
    code = setup + """
cpu = lambda who: sum(getattr(resource.getrusage(who), f) for f in ('ru_utime', 'ru_stime'))  # noqa: E731
def own_peak_mib():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report this benchmark's own peak
    # (its corpus in memory) whenever that is higher than the stage's
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
cpu_before = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
start = time.perf_counter()
report = filter_stage.run(params)
seconds = time.perf_counter() - start
print('RESULT ' + json.dumps({'seconds': seconds, 'report': report,
      'cpu_seconds_stage_process': cpu(resource.RUSAGE_SELF) - cpu_before[0],
      'cpu_seconds_workers': cpu(resource.RUSAGE_CHILDREN) - cpu_before[1],
      'peak_rss_mib': own_peak_mib(),
      'peak_worker_rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""
    pin = (lambda: os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])) if cpus else None
    output = subprocess.run([sys.executable, "-c", code], cwd=directory, capture_output=True, text=True,
                            preexec_fn=pin)
    line = next((text for text in output.stdout.splitlines() if text.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(output.stderr[-3000:])
    result = json.loads(line[len("RESULT "):])
    import pyarrow.parquet as pq

    kept = [r["id"] for split in ("train", "validation")
            for p in sorted((directory / "data/filtered" / split).glob("*.parquet"))
            for r in pq.read_table(p, columns=["id"]).to_pylist()]
    result["kept"] = len(kept)
    result["turkish_precision"] = sum(i.startswith("tr-") for i in kept) / max(len(kept), 1)
    return result


def run_naive(docs: list[tuple[str, str]], passes: int = 3) -> dict:
    """langdetect on every whole document, `passes` times: its best pass is the baseline (the fastest, so the
    speedups are the least flattering; the result lists every pass)."""
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    passes_seconds = []
    for _ in range(passes):
        DetectorFactory.seed = 0
        start = time.perf_counter()
        kept = []
        for label, text in docs:
            try:
                if detect(text) == "tr":
                    kept.append(label)
            except LangDetectException:
                pass
        passes_seconds.append(time.perf_counter() - start)
    seconds = min(passes_seconds)
    precision = sum(label.startswith("tr") for label in kept) / max(len(kept), 1)
    return {"seconds": seconds, "seconds_of_each_pass": [round(s, 2) for s in passes_seconds],
            "docs_per_second": len(docs) / seconds, "kept": len(kept), "turkish_precision": precision}


def cost_per_turkish_page(docs: list[tuple[str, str]]) -> dict:
    """Where a worker's time goes on a Turkish page: the steps of pipeline.judge in their order, each timed
    on each page, in one process (so a step that reuses what an earlier one computed, as MinHash and
    decontamination reuse the words step's n-gram hashes, is charged only for its own work); best of three
    passes, microseconds per page."""
    from pipeline.decontaminate import Contamination
    from pipeline.dedup import digest, sketch
    from pipeline.language import TurkishDetector
    from pipeline.params import load
    from pipeline.quality import failed_rule
    from pipeline.text import normalise
    from pipeline.wordscan import scan

    rules = load(ROOT / "params.yaml").filter
    detector = TurkishDetector(rules)
    contamination = Contamination(rules.decontamination_ngram)
    for _, text in docs[: len(docs) // 100]:  # the validation split's share of evaluation texts
        contamination.add(text)
    contamination.freeze()
    pages = [text for label, text in docs if label == "tr"]
    state: dict = {}
    steps = {
        "normalise": lambda page: state.update(text=normalise(page)),
        "language_id": lambda page: detector.decide([state["text"]]),
        "words": lambda page: state.update(scanned=scan(state["text"], rules.decontamination_ngram)),
        "quality_rules": lambda page: failed_rule(state["text"], rules, state["scanned"]),
        "decontamination": lambda page: contamination.contaminated(state["scanned"].ngrams),
        "minhash": lambda page: (sketch(state["scanned"].shingles, rules.minhash_permutations, rules.minhash_bands,
                                        rules.minhash_rows), digest(state["scanned"].key)),
    }
    best = {name: float("inf") for name in steps}
    for _ in range(3):
        spent = dict.fromkeys(steps, 0)
        for page in pages:
            for name, step in steps.items():
                start = time.perf_counter_ns()
                step(page)
                spent[name] += time.perf_counter_ns() - start
        best = {name: min(best[name], spent[name]) for name in steps}
    return {"pages": len(pages), "microseconds": {name: round(ns / len(pages) / 1e3, 1) for name, ns in best.items()}}


def run_language_id(docs: list[tuple[str, str]]) -> dict:
    """The language decision alone (pipeline.language: the letter rules, the detector for short texts and names),
    one document at a time in this process."""
    from pipeline.language import TurkishDetector
    from pipeline.params import load

    rules = load(ROOT / "params.yaml").filter
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    detector = TurkishDetector(rules)
    loading = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    verdicts = [detector.decide([text]).turkish for _, text in docs]
    seconds = time.perf_counter() - start
    kept = [label for (label, _), turkish in zip(docs, verdicts) if turkish]
    return {"docs": len(docs), "seconds": seconds, "docs_per_second": len(docs) / seconds,
            "cpu_seconds_loading_the_models": round(sum(getattr(loading, f) - getattr(cpu, f)
                                                        for f in ("ru_utime", "ru_stime")), 2),
            "turkish_precision": sum(label.startswith("tr") for label in kept) / max(len(kept), 1),
            "turkish_recall": len(kept and [k for k in kept if k.startswith("tr")]) /
            max(sum(label.startswith("tr") for label, _ in docs), 1)}


def cpu_per_document(run: dict, docs: int) -> float:
    """Microseconds of CPU a document took in all the stage's processes: a core's worth of throughput."""
    return round((run["cpu_seconds_stage_process"] + run["cpu_seconds_workers"]) / docs * 1e6, 1)


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--naive-docs", type=int, default=2000)
    parser.add_argument("--scaling", type=lambda text: [int(n) for n in text.split(",")], default=[],
                        help="CPU counts to run the filter stage on besides all of them, e.g. 1,2,4,8")
    parser.add_argument("--name", default="filter_throughput", help="bench/results/NAME.json")
    args = parser.parse_args()
    docs = corpus(args.docs)
    words = sum(len(text.split()) for _, text in docs) / len(docs)
    cores = usable_cpus()
    scaling = []
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_filter(docs, Path(tmp))
        for n in args.scaling:  # the same prepared data on fewer CPUs: does throughput grow with them?
            run = run_filter(docs, Path(tmp), cpus=n)
            scaling.append({"cpus": n, "docs_per_second": round(args.docs / run["seconds"]),
                            "docs_per_second_per_cpu": round(args.docs / run["seconds"] / n),
                            "cpu_microseconds_per_document": cpu_per_document(run, args.docs),
                            "stage_process_microseconds_per_document":
                                round(run["cpu_seconds_stage_process"] / args.docs * 1e6, 1),
                            "kept": run["kept"]})
    ours["docs_per_second"] = args.docs / ours["seconds"]
    # CPU time per document, all processes: what a core's worth of throughput is made of, and the share of the
    # stage's own process, which every worker's output goes through (the part that does not scale with cores)
    ours["cpu_microseconds_per_document"] = cpu_per_document(ours, args.docs)
    ours["stage_process_share_of_cpu"] = round(
        ours["cpu_seconds_stage_process"] / (ours["cpu_seconds_stage_process"] + ours["cpu_seconds_workers"]), 3)
    with tempfile.TemporaryDirectory() as tmp:  # memory must not grow with the corpus
        fifth = run_filter(docs[: args.docs // 5], Path(tmp))
    naive = run_naive(docs[: args.naive_docs])
    language_id = run_language_id(docs[: args.naive_docs * 5])
    cost = cost_per_turkish_page(docs[: args.naive_docs])
    result = {
        "machine": f"{platform.machine()}, {cores} cores ({cpu_model()}), Python {platform.python_version()}",
        "docs": args.docs, "mean_words_per_doc": round(words, 1), "mix": dict(MIX),
        "filter_stage": {k: v for k, v in ours.items() if k != "report"} | {"drops": ours["report"]["sources"]["web"]},
        "peak_rss_mib_at_a_fifth_of_the_docs": {"docs": args.docs // 5, "stage": fifth["peak_rss_mib"],
                                                "worker": fifth["peak_worker_rss_mib"]},
        "naive_langdetect": naive | {"docs": args.naive_docs},
        "lingua_language_id_only": language_id,
        "cost_per_turkish_page": cost,
        "speedup_language_id_only": round(language_id["docs_per_second"] / naive["docs_per_second"], 2),
        "speedup_total": round(ours["docs_per_second"] / naive["docs_per_second"], 2),
        "speedup_per_core": round(ours["docs_per_second"] / cores / naive["docs_per_second"], 2),
    }
    if scaling:
        result["scaling"] = scaling
    print(json.dumps(result, indent=2))
    save(args.name, result)


if __name__ == "__main__":
    main()
