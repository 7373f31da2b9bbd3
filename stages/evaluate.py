"""evaluate: is the tuned model better at Turkish than the base, by how much, and what did it cost elsewhere?

Input: data/tokenized/validation, models/base, models/adapter, `evaluate.*` params. Output:
- reports/eval.json: base, tuned and delta for held-out loss, perplexity and bits per byte (all rows, by kind
  and by source), the same on an English held-out set (forgetting), tokenizer fertility per source, the
  share of generated answers detected as Turkish, and lm-evaluation-harness task scores (tasks that cannot
  load, e.g. offline, are listed under `lm_eval_skipped` with the reason);
- reports/samples.md: each prompt's base and tuned answers side by side.
Base and tuned figures come from one loaded model with the adapter switched off and on.
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

from pipeline.chat import IGNORE, encode_text
from pipeline.errors import PipelineError
from pipeline.language import TurkishDetector
from pipeline.models import load_base, load_tokenizer
from pipeline.outputs import write_json, write_text
from pipeline.params import Params
from pipeline.text import words

DATA = Path("data/tokenized/validation")
ADAPTER = Path("models/adapter")
REPORT = Path("reports/eval.json")
SAMPLES = Path("reports/samples.md")
PLOT = Path("reports/eval_plot.json")
log = logging.getLogger("evaluate")


@torch.no_grad()
def row_losses(model, rows: list[dict], batch_size: int, pad_id: int, label: str) -> list[tuple[float, int]]:
    """(summed cross-entropy in nats, learned tokens) for each row, in the given order."""
    device = next(model.parameters()).device
    # Longest first: batches of similar length waste little on padding.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for start in tqdm(range(0, len(order), batch_size), desc=f"held-out {label}", unit=" batches"):
        batch = [rows[i] for i in order[start : start + batch_size]]
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
        for position, index in enumerate(order[start : start + batch_size]):
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


def compare(base: dict, tuned: dict) -> dict:
    delta = {k: round(tuned[k] - base[k], 5) for k in base if k != "tokens" and isinstance(base[k], (int, float))}
    return {"base": base, "tuned": tuned, "delta": delta}


def held_out(model, tokenizer, rows: list[dict], params: Params, groups: dict[str, list[int]]) -> dict:
    """Loss, perplexity and bits per byte, base vs tuned, over all rows and each group of row indices."""
    pad_id = tokenizer.pad_token_id or 0
    sizes = [learned_bytes(tokenizer, row) for row in rows]
    with model.disable_adapter():
        base = row_losses(model, rows, params.evaluate.batch_size, pad_id, "base")
    tuned = row_losses(model, rows, params.evaluate.batch_size, pad_id, "tuned")
    out = {"all": compare(summarise(base, sizes), summarise(tuned, sizes))}
    for name, indices in groups.items():
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        out[name] = compare(summarise(pick(base), pick(sizes)), summarise(pick(tuned), pick(sizes)))
    return out


def english_rows(path: Path, tokenizer, max_length: int) -> list[dict]:
    if not path.is_file():
        raise PipelineError(f"evaluate.english_file: no such file {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise PipelineError(f"{path}:{number}: expected a JSON object with a 'text' field") from None
            rows += [{"input_ids": c, "labels": c} for c in encode_text(tokenizer, text, max_length)]
    return rows


def fertility(tokenizer, rows: list[dict]) -> dict:
    """Tokens per word of each source's held-out text: what Turkish costs in tokens with this tokenizer."""
    tokens, word_count = defaultdict(int), defaultdict(int)
    for row in rows:
        text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
        tokens[row["source"]] += len(row["input_ids"])
        word_count[row["source"]] += len(words(text))
    return {source: round(tokens[source] / max(word_count[source], 1), 3) for source in sorted(tokens)}


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
        answers.append(tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def generation(model, tokenizer, params: Params) -> tuple[dict, str]:
    prompts = params.evaluate.prompts
    if not prompts:
        return {}, ""
    with model.disable_adapter():
        base = generate(model, tokenizer, prompts, params.evaluate.max_new_tokens)
    tuned = generate(model, tokenizer, prompts, params.evaluate.max_new_tokens)
    rules = params.filter
    detector = TurkishDetector(rules)
    rate = lambda answers: round(sum(detector.is_turkish(answers)) / len(answers), 4)  # noqa: E731
    cell = lambda text: text.replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"  # noqa: E731
    table = ["# Answers, base vs tuned", "", "Greedy decoding, at most "
             f"{params.evaluate.max_new_tokens} new tokens.", "", "| prompt | base | tuned |", "|---|---|---|"]
    table += [f"| {cell(p)} | {cell(b)} | {cell(t)} |" for p, b, t in zip(prompts, base, tuned)]
    report = compare({"turkish_answer_rate": rate(base)}, {"turkish_answer_rate": rate(tuned)})
    return report | {"prompts": len(prompts)}, "\n".join(table) + "\n"


def lm_eval_scores(model, tokenizer, params: Params) -> tuple[dict, dict]:
    """Each task run on its own, base then tuned, so one task that cannot load skips only itself."""
    settings = params.evaluate
    if not settings.lm_eval_tasks:
        return {}, {}
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=settings.lm_eval_include_path)
    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    scores, skipped = {}, {}
    for task in settings.lm_eval_tasks:
        results = {}
        try:
            for variant in ("base", "tuned"):
                with model.disable_adapter() if variant == "base" else nullcontext():
                    run = simple_evaluate(model=harness, tasks=[task], limit=settings.lm_eval_limit,
                                          task_manager=manager, log_samples=False)
                results[variant] = {
                    f"{name}/{metric.split(',')[0]}": round(value, 5)
                    for name, metrics in run["results"].items()
                    for metric, value in metrics.items()
                    if isinstance(value, float) and "stderr" not in metric
                }
        except Exception as exc:  # offline Hub, gated data, unknown task name: reported, not fatal
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            skipped[task] = f"{type(exc).__name__}: {reason}"[:300]
            log.warning("lm-eval task %s skipped: %s", task, skipped[task])
            continue
        scores[task] = compare(results["base"], results["tuned"])
    return scores, skipped


def plot_rows(report: dict) -> dict:
    """Bits per byte of base and tuned per held-out set, as rows `dvc plots` draws as bars (dvc.yaml)."""
    sets = {name: figures for name, figures in report["validation"].items()} | {"english": report["english"]}
    rows = [{"set": f"{name} ({model})", "bits_per_byte": figures[model]["bits_per_byte"]}
            for name, figures in sets.items() for model in ("base", "tuned")]
    return {"bits_per_byte": rows}


def run(params: Params) -> dict:
    from datasets import load_from_disk
    from peft import PeftModel

    for path in (DATA, ADAPTER):
        if not path.exists():
            raise PipelineError(f"{path}: missing; run the stages before evaluate (dvc repro)")
    dataset = load_from_disk(str(DATA))
    if params.evaluate.max_rows:
        dataset = dataset.select(range(min(params.evaluate.max_rows, len(dataset))))
    rows = dataset.select_columns(["input_ids", "labels", "source", "kind"]).to_list()
    tokenizer = load_tokenizer()
    model = PeftModel.from_pretrained(load_base(), str(ADAPTER)).eval()

    groups: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[f"kind:{row['kind']}"].append(index)
        groups[f"source:{row['source']}"].append(index)
    report = {"validation": held_out(model, tokenizer, rows, params, dict(sorted(groups.items())))}
    english = english_rows(Path(params.evaluate.english_file), tokenizer, params.tokenize.max_seq_length)
    report["english"] = held_out(model, tokenizer, english, params, {})["all"]
    report["fertility_tokens_per_word"] = fertility(tokenizer, rows)
    report["generation"], samples = generation(model, tokenizer, params)
    report["lm_eval"], report["lm_eval_skipped"] = lm_eval_scores(model, tokenizer, params)
    write_json(REPORT, report)
    write_json(PLOT, plot_rows(report))
    write_text(SAMPLES, samples or "# Answers, base vs tuned\n\nNo prompts in evaluate.prompts.\n")
    validation = report["validation"]["all"]
    log.info("validation perplexity base %.3f -> tuned %.3f; English %.3f -> %.3f",
             validation["base"]["perplexity"], validation["tuned"]["perplexity"],
             report["english"]["base"]["perplexity"], report["english"]["tuned"]["perplexity"])
    return report


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
