"""evaluate: did the Turkish get better, beyond the training data, and at what cost elsewhere?

Input: data/tokenized/validation, models/base, models/adapter, `evaluate.*` params. Base and tuned figures come
from one loaded model with the adapter switched off and on. Each measure gets a verdict, better, same (within
noise) or worse:
- `turkish_general` (the headline): perplexity and bits per byte on general Turkish that no training source
  holds (`evaluate.turkish_general_file`): what a gain on it shows is not memorisation;
- `validation`: the same on the held-out split of the training sources (by kind and by source too): the
  training distribution, so a gain here alone may be memorisation;
- `english`: the same on English text (`evaluate.english_file`): forgetting;
- each lm-evaluation-harness task (`evaluate.lm_eval_tasks`), with the harness's standard error; tasks that
  cannot load (offline, gated) are listed under `lm_eval_skipped` with the reason;
- the share of answers to `evaluate.prompts` in Turkish (the filter's language decision).
A held-out verdict compares the two models row by row: the mean change in loss per token against twice its
standard error over rows. A task's: the change in its score against twice the combined standard errors.
Output: reports/eval.json (everything), reports/metrics/eval.json (the headline and the verdicts: what
`dvc exp show` compares), reports/samples.md (answers side by side) and reports/eval_plot.json.
With `evaluate.fail_on_regression` set, the stage fails, after writing them, when a measure is worse by more.
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline import paths
from pipeline.atomic import write_json, write_text
from pipeline.chat import IGNORE, encode_text
from pipeline.errors import PipelineError
from pipeline.eval_sets import check_lm_eval_tasks
from pipeline.language import TurkishDetector
from pipeline.models import load_base, load_tokenizer
from pipeline.params import Params
from pipeline.text import words

NOISE = 2.0  # standard errors a change must exceed to count as better or worse
log = logging.getLogger("evaluate")


# held-out perplexity ---------------------------------------------------------------------------------------------

@torch.no_grad()
def row_losses(model, rows: list[dict], batch_size: int, pad_id: int, label: str) -> list[tuple[float, int]]:
    """(summed cross-entropy in nats, learned tokens) for each row, in the given order."""
    device = next(model.parameters()).device
    # Longest first: batches of similar length waste little on padding.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for start in tqdm(range(0, len(order), batch_size), desc=f"held-out {label}", unit=" batches"):
        batch = [rows[i] for i in order[start: start + batch_size]]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            n = len(row["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(row["input_ids"]), torch.tensor(row["labels"]), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        targets = labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE, reduction="none"
        ).sum(dim=1)
        counts = (targets != IGNORE).sum(dim=1)
        for position, index in enumerate(order[start: start + batch_size]):
            results[index] = (nll[position].item(), int(counts[position]))
    return results


def learned_bytes(tokenizer, row: dict) -> int:
    """UTF-8 bytes of the text the scored tokens spell (bits per byte does not depend on the tokenizer)."""
    targets = [token for token, label in zip(row["input_ids"][1:], row["labels"][1:]) if label != IGNORE]
    return len(tokenizer.decode(targets, skip_special_tokens=True).encode("utf-8"))


def summarise(losses: list[tuple[float, int]], sizes: list[int]) -> dict:
    nll, tokens, size = sum(x for x, _ in losses), sum(n for _, n in losses), sum(sizes)
    loss = nll / max(tokens, 1)
    return {"loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 700)), 4),
            "bits_per_byte": round(nll / math.log(2) / max(size, 1), 5), "tokens": tokens}


def verdict(change: float, stderr: float | None, lower_is_better: bool) -> str:
    """better / same / worse: a change within NOISE standard errors is the same."""
    if stderr is not None and abs(change) <= NOISE * stderr or change == 0:
        return "same"
    return "better" if (change < 0) == lower_is_better else "worse"


def paired_loss_change(base: list[tuple[float, int]], tuned: list[tuple[float, int]]) -> tuple[float, float | None]:
    """The change in loss per token, tuned minus base, and its standard error over rows (a ratio estimate:
    rows differ in length, and the two models score the same rows)."""
    tokens = sum(n for _, n in base)
    differences = [t - b for (b, _), (t, _) in zip(base, tuned)]
    change = sum(differences) / max(tokens, 1)
    if len(base) < 2:
        return change, None
    residuals = [d - change * n for d, (_, n) in zip(differences, base)]
    variance = sum(r * r for r in residuals) * len(base) / (len(base) - 1)
    return change, math.sqrt(variance) / max(tokens, 1)


def compare(base: list[tuple[float, int]], tuned: list[tuple[float, int]], sizes: list[int]) -> dict:
    before, after = summarise(base, sizes), summarise(tuned, sizes)
    change, stderr = paired_loss_change(base, tuned)
    delta = {key: round(after[key] - before[key], 5) for key in ("loss", "perplexity", "bits_per_byte")}
    return {"base": before, "tuned": after, "delta": delta,
            "loss_change_stderr": None if stderr is None else round(stderr, 5),
            "verdict": verdict(change, stderr, lower_is_better=True)}


def held_out(model, tokenizer, rows: list[dict], params: Params, groups: dict[str, list[int]] | None = None) -> dict:
    """Loss, perplexity and bits per byte, base vs tuned, with a verdict: over all rows and each group."""
    pad_id = tokenizer.pad_token_id or 0
    sizes = [learned_bytes(tokenizer, row) for row in rows]
    with model.disable_adapter():
        base = row_losses(model, rows, params.evaluate.batch_size, pad_id, "base")
    tuned = row_losses(model, rows, params.evaluate.batch_size, pad_id, "tuned")
    out = {"all": compare(base, tuned, sizes)}
    for name, indices in (groups or {}).items():
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        out[name] = compare(pick(base), pick(tuned), pick(sizes))
    return out


def text_rows(path: Path, param: str, tokenizer, max_length: int) -> list[dict]:
    """A jsonl file of {"text": ...} as token rows (long texts cut into max_length chunks)."""
    if not path.is_file():
        raise PipelineError(f"{param}: no such file {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise PipelineError(f"{path}:{number}: expected a JSON object with a 'text' field") from None
            rows += [{"input_ids": c, "labels": c} for c in encode_text(tokenizer, text, max_length)]
    if not rows:
        raise PipelineError(f"{param}: {path} holds no text")
    return rows


def fertility(tokenizer, rows: list[dict]) -> dict:
    """Tokens per word of each source's held-out text: what Turkish costs in tokens with this tokenizer."""
    tokens, word_count = defaultdict(int), defaultdict(int)
    for row in rows:
        text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
        tokens[row["source"]] += len(row["input_ids"])
        word_count[row["source"]] += len(words(text))
    return {source: round(tokens[source] / max(word_count[source], 1), 3) for source in sorted(tokens)}


# answers ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    device = next(model.parameters()).device
    answers = []
    for prompt in tqdm(prompts, desc="generate", unit=" prompts"):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        torch.manual_seed(0)
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return answers


def generation(model, tokenizer, params: Params) -> tuple[dict, str]:
    prompts = params.evaluate.prompts
    if not prompts:
        return {}, "# Answers, base vs tuned\n\nNo prompts in evaluate.prompts.\n"
    with model.disable_adapter():
        base = generate(model, tokenizer, prompts, params.evaluate.max_new_tokens)
    tuned = generate(model, tokenizer, prompts, params.evaluate.max_new_tokens)
    detector = TurkishDetector(params.filter)
    seen = {label: [detector.decide([answer]) for answer in answers] for label, answers in
            (("base", base), ("tuned", tuned))}
    rate = {label: round(sum(turkish for turkish, _ in decisions) / len(decisions), 4)
            for label, decisions in seen.items()}
    cell = lambda text: text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"  # noqa: E731
    table = ["# Answers, base vs tuned", "",
             f"Greedy decoding, at most {params.evaluate.max_new_tokens} new tokens. The language is what the "
             "filter's language decision sees in the answer.", "",
             "| prompt | base | language | tuned | language |", "|---|---|---|---|---|"]
    for i, prompt in enumerate(prompts):
        table.append(f"| {cell(prompt)} | {cell(base[i])} | {seen['base'][i][1]} | {cell(tuned[i])} | "
                     f"{seen['tuned'][i][1]} |")
    report = {"prompts": len(prompts), "base": {"turkish_answer_rate": rate["base"]},
              "tuned": {"turkish_answer_rate": rate["tuned"]},
              "delta": {"turkish_answer_rate": round(rate["tuned"] - rate["base"], 4)}}
    return report, "\n".join(table) + "\n"


# lm-evaluation-harness -------------------------------------------------------------------------------------------

def task_scores(run: dict) -> tuple[dict, dict, dict]:
    """Scores, their standard errors and whether higher is better, per `task/metric`, from a harness result."""
    scores, stderrs, higher = {}, {}, {}
    for name, metrics in run["results"].items():
        for metric, value in metrics.items():
            if not isinstance(value, float) or "_stderr" in metric:
                continue
            base_metric, _, _filter = metric.partition(",")
            key = f"{name}/{base_metric}"
            scores[key] = round(value, 5)
            error = metrics.get(f"{base_metric}_stderr,{_filter}" if _filter else f"{base_metric}_stderr")
            stderrs[key] = error if isinstance(error, float) else None
            higher[key] = run.get("higher_is_better", {}).get(name, {}).get(base_metric, True)
    return scores, stderrs, higher


def lm_eval_scores(model, tokenizer, params: Params) -> tuple[dict, dict]:
    """Each task run on its own, base then tuned, so one task that cannot load skips only itself."""
    settings = params.evaluate
    if not settings.lm_eval_tasks:
        return {}, {}
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # the harness logs each run's seeds and contexts, and warns that a model passed as an object may have been
    # launched by accelerate: it was not, it is this stage's own; its warnings and errors still show
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    manager = TaskManager(include_path=settings.lm_eval_include_path)
    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    scores, skipped = {}, {}
    for task in settings.lm_eval_tasks:
        runs = {}
        try:
            for variant in ("base", "tuned"):
                with model.disable_adapter() if variant == "base" else nullcontext():
                    runs[variant] = task_scores(simple_evaluate(model=harness, tasks=[task],
                                                                limit=settings.lm_eval_limit, task_manager=manager,
                                                                log_samples=False))
        except Exception as exc:  # noqa: BLE001 - offline Hub, gated data: reported, not fatal
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            skipped[task] = f"{type(exc).__name__}: {reason}"[:300]
            log.warning("lm-eval task %s skipped: %s", task, skipped[task])
            continue
        (base, base_errors, higher), (tuned, tuned_errors, _) = runs["base"], runs["tuned"]
        measures = {}
        for key in base:
            errors = [base_errors[key], tuned_errors.get(key)]
            stderr = math.sqrt(sum(e * e for e in errors)) if all(e is not None for e in errors) else None
            change = tuned[key] - base[key]
            measures[key] = {"base": base[key], "tuned": tuned[key], "delta": round(change, 5),
                             "stderr": None if stderr is None else round(stderr, 5),
                             "verdict": verdict(change, stderr, lower_is_better=not higher[key])}
        scores[task] = measures
    return scores, skipped


# report ----------------------------------------------------------------------------------------------------------

def headline(report: dict) -> dict:
    """The few numbers experiments are compared by (reports/metrics/eval.json, short names so that `dvc exp show`
    fits a terminal): the tuned model's perplexity and the verdict against the base on general Turkish (the
    headline), the validation split and English; each task's verdict (by its first metric); the Turkish answer
    rate. The base's figures are in reports/eval.json."""
    sets = {"general": report["turkish_general"]["all"], "validation": report["validation"]["all"],
            "english": report["english"]["all"]}
    out = {name: {"ppl": figures["tuned"]["perplexity"], "verdict": figures["verdict"]} for name, figures in sets.items()}
    out["tasks"] = {task: next(iter(measures.values()))["verdict"] for task, measures in report["lm_eval"].items()}
    out["tasks"].update({task: "skipped" for task in report["lm_eval_skipped"]})
    if report["generation"]:
        out["answers_tr"] = report["generation"]["tuned"]["turkish_answer_rate"]
    return out


def regressions(report: dict, margin: float) -> list[str]:
    """Measures that are worse, beyond noise and by more than `margin` (a share of a perplexity, an absolute
    score)."""
    found = []
    for name in ("turkish_general", "validation", "english"):
        figures = report[name]["all"]
        if figures["verdict"] == "worse" and figures["tuned"]["perplexity"] > figures["base"]["perplexity"] * (1 + margin):
            found.append(f"{name} perplexity {figures['base']['perplexity']:g} -> {figures['tuned']['perplexity']:g}")
    for task, measures in report["lm_eval"].items():
        for key, measure in measures.items():
            if measure["verdict"] == "worse" and abs(measure["delta"]) > margin:
                found.append(f"{key} {measure['base']:g} -> {measure['tuned']:g}")
    return found


def plot_rows(report: dict) -> dict:
    """Bits per byte of base and tuned per held-out set, as rows `dvc plots` draws as bars (dvc.yaml)."""
    sets = {"turkish_general": report["turkish_general"]["all"], **report["validation"],
            "english": report["english"]["all"]}
    rows = [{"set": f"{name} ({model})", "bits_per_byte": figures[model]["bits_per_byte"]}
            for name, figures in sets.items() for model in ("base", "tuned")]
    return {"bits_per_byte": rows}


def run(params: Params) -> dict:
    from datasets import load_from_disk
    from peft import PeftModel

    settings = params.evaluate
    check_lm_eval_tasks(settings)
    validation = paths.TOKENIZED / "validation"
    for path in (validation, paths.ADAPTER):
        if not path.exists():
            raise PipelineError(f"{path}: missing; run the stages before evaluate (dvc repro)")
    dataset = load_from_disk(str(validation))
    if settings.max_rows:
        dataset = dataset.select(range(min(settings.max_rows, len(dataset))))
    rows = dataset.select_columns(["input_ids", "labels", "source", "kind"]).to_list()
    tokenizer = load_tokenizer()
    max_length = params.tokenize.max_seq_length
    general = text_rows(Path(settings.turkish_general_file), "evaluate.turkish_general_file", tokenizer, max_length)
    english = text_rows(Path(settings.english_file), "evaluate.english_file", tokenizer, max_length)
    model = PeftModel.from_pretrained(load_base(), str(paths.ADAPTER)).eval()

    groups: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[f"kind:{row['kind']}"].append(index)
        groups[f"source:{row['source']}"].append(index)
    report = {"turkish_general": held_out(model, tokenizer, general, params),
              "validation": held_out(model, tokenizer, rows, params, dict(sorted(groups.items()))),
              "english": held_out(model, tokenizer, english, params),
              "fertility_tokens_per_word": fertility(tokenizer, rows)}
    report["generation"], samples = generation(model, tokenizer, params)
    report["lm_eval"], report["lm_eval_skipped"] = lm_eval_scores(model, tokenizer, params)
    report = {"headline": headline(report), **report}
    write_json(paths.EVAL_REPORT, report)
    write_json(paths.metrics("eval"), report["headline"])
    write_json(paths.EVAL_PLOT, plot_rows(report))
    write_text(paths.SAMPLES, samples)
    log.info("headline: %s", json.dumps(report["headline"], ensure_ascii=False))
    if settings.fail_on_regression is not None:
        worse = regressions(report, settings.fail_on_regression)
        if worse:
            raise PipelineError(f"evaluate.fail_on_regression={settings.fail_on_regression}: worse than the base on "
                                + "; ".join(worse))
    return report


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
