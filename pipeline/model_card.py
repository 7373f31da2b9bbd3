"""The Hub model cards of the adapter and of the GGUF: what the model is, what it learned from, how good it is.

Written from the run's own records: the base model and its revision (models/base/source.json), the data
sources with their revisions and counts (reports/prepare.json or reports/prepare/<source>.json), token counts
(reports/tokens.json, with the plan's tokens per source), the `train` params and the
evaluation (reports/eval.json). The metadata block is huggingface_hub's ModelCardData, so the Hub reads it.
A missing report leaves its section saying so: a card is documentation, not a gate.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from pipeline import paths


# How each measure moves when the tuned model is better; a measure not named here gets no derived verdict.
LOWER_IS_BETTER = {"loss", "perplexity", "bits_per_byte"}
HIGHER_IS_BETTER = {"turkish_answer_rate", "acc", "acc_norm", "exact_match", "f1"}
SHOWN = ("perplexity", "bits_per_byte", "turkish_answer_rate")  # of a held-out set's figures
SET_NAMES = {"turkish_general": "General Turkish (headline)", "validation": "Turkish validation",
             "english": "English (forgetting)", "generation": "Answers in Turkish"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

GEMMA_TERMS = (
    "This model is a derivative of Gemma and is provided under and subject to the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms) and its Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy). "
    "Anyone who uses or redistributes it must pass these terms on."
)
APACHE_TERMS = "The base model is released under the Apache License 2.0, and so is this derivative."

BODY = """
# {{ title }}

{{ summary }}

## Base model

{{ base_line }}

## Training data

{% if data_rows -%}
| source | dataset | revision | rows kept | training tokens | planned tokens |
|---|---|---|---|---|---|
{% for row in data_rows -%}
| {{ row.name }} | {{ row.dataset }} | {{ row.revision }} | {{ row.rows }} | {{ row.tokens }} | {{ row.planned }} |
{% endfor %}
{% endif -%}
{{ tokens_line }}

## Training

QLoRA (4-bit NF4 base, LoRA on the language model's projections) with TRL; the `train` params of the run:

| param | value |
|---|---|
{% for key, value in train_params -%}
| `{{ key }}` | {{ value }} |
{% endfor %}
## Evaluation

{% if eval_rows -%}
Base and tuned on the same held-out rows (lower perplexity and bits per byte are better; bits per byte compare
across tokenizers).

| measure | base | tuned | delta | verdict |
|---|---|---|---|---|
{% for row in eval_rows -%}
| {{ row.measure }} | {{ row.base }} | {{ row.tuned }} | {{ row.delta }} | {{ row.verdict }} |
{% endfor %}
{%- else -%}
Not evaluated: {{ eval_missing }}.
{%- endif %}

## How to use

{{ usage }}

## Terms of use

{{ terms }}
"""

ADAPTER_USAGE = """With PEFT, on the base model:

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("{repo}", dtype="bfloat16")
tokenizer = AutoTokenizer.from_pretrained("{repo}")
messages = [{{"role": "user", "content": "Türkiye'nin başkenti neresidir?"}}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
print(tokenizer.decode(model.generate(ids, max_new_tokens=128)[0][ids.shape[1]:], skip_special_tokens=True))
```

As one standalone checkpoint: `model.merge_and_unload().save_pretrained("merged")` (the pipeline's
`export.merge: true` writes it to `models/merged/`). For llama.cpp and Ollama, `export.gguf` (e.g. `q4_k_m`)
writes a GGUF with an Ollama Modelfile to `models/gguf/`."""

GGUF_USAGE = """`{file}` is the adapter merged into the base and converted by llama.cpp's own converter
({gguf_type}). With Ollama, from the folder holding it and the Modelfile (chat template and stop tokens set):

```bash
ollama create gemma-tr -f Modelfile
ollama run gemma-tr "Türkiye'nin başkenti neresidir?"
```

With llama.cpp: `llama-cli -m {file} -cnv` (the chat template is stored in the file), or from Python:

```python
from llama_cpp import Llama

llm = Llama("{file}", n_ctx=4096)
reply = llm.create_chat_completion([{{"role": "user", "content": "Türkiye'nin başkenti neresidir?"}}])
print(reply["choices"][0]["message"]["content"])
```"""


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def signed(value) -> str:
    return "–" if value is None else f"{value:+.4g}"


def derived_verdict(measure: str, delta: float | None) -> str:
    if delta is None or measure not in LOWER_IS_BETTER | HIGHER_IS_BETTER:
        return "–"
    if delta == 0:
        return "same"
    return "better" if (delta < 0) == (measure in LOWER_IS_BETTER) else "worse"


def is_block(block) -> bool:
    """{base: {measure: value}, tuned: {...}, delta: {...}[, verdict]}: one set's (or subset's) figures."""
    return isinstance(block, dict) and isinstance(block.get("base"), dict) and isinstance(block.get("tuned"), dict)


def row(label: str, measure: str, base, tuned, delta, verdict) -> dict:
    """A verdict the evaluation gives (from its noise estimate) wins over the sign of the change."""
    name = measure.split("/")[-1]
    return {"measure": f"{label}: {name.replace('_', ' ')}", "base": base, "tuned": tuned, "delta": delta,
            "verdict": verdict or derived_verdict(name, delta)}


def block_rows(label: str, block: dict) -> list[dict]:
    given = block.get("verdict")
    return [row(label, measure, block["base"][measure], block["tuned"].get(measure),
                (block.get("delta") or {}).get(measure), given.get(measure) if isinstance(given, dict) else given)
            for measure in block["base"] if measure in SHOWN or "/" in measure]


def task_rows(task: str, scores: dict) -> list[dict]:
    """One lm-eval task: {metric: {base, tuned, delta, verdict}}, or one block of metrics."""
    if is_block(scores):
        return block_rows(f"lm-eval {task}", scores)
    return [row(f"lm-eval {task}", metric, m["base"], m["tuned"], m.get("delta"), m.get("verdict"))
            for metric, m in scores.items() if isinstance(m, dict)]


def evaluation_rows(evaluation: dict) -> list[dict]:
    """reports/eval.json as rows of {measure, base, tuned, delta, verdict}, the headline set first. The one place
    that knows the report's layout: held-out sets of {base, tuned, delta, verdict} blocks, whole or split into
    subsets (`all`, `kind:chat`, `source:web`, ...), the answers' Turkish rate, the lm-eval tasks by metric."""
    rows = []
    order = [name for name in SET_NAMES if name in evaluation] + [name for name in evaluation if name not in SET_NAMES]
    for name in order:
        block, label = evaluation[name], SET_NAMES.get(name, name.replace("_", " "))
        if name == "lm_eval":
            for task, scores in block.items():
                rows += task_rows(task, scores)
        elif is_block(block):
            rows += block_rows(label, block)
        elif isinstance(block, dict) and any(is_block(sub) for sub in block.values()):
            for subset, sub in block.items():
                if is_block(sub):
                    rows += block_rows(label if subset == "all" else f"{label} ({subset.replace(':', ' ')})", sub)
    return rows


def named_sources(sources) -> list[dict]:
    """params `data.sources` as [{name, path, config, split, revision}]: a list of named sources, or a dict of
    name to a source whose `dataset` says where its rows come from."""
    if isinstance(sources, dict):
        return [{"name": name, **source["dataset"]} for name, source in sources.items()]
    return [dict(source) for source in sources]


def prepare_reports(reports: Path) -> dict:
    """Each source's prepare report: one file for all (prepare.json) or one per source (prepare/<name>.json)."""
    combined = read_json(reports / "prepare.json")
    if combined is not None:
        return combined.get("sources", {})
    folder = reports / paths.PREPARE_REPORTS.relative_to(paths.REPORTS)
    return {path.stem: read_json(path) for path in sorted(folder.glob("*.json"))}


def data_rows(sources: list[dict], prepared: dict, tokens: dict | None) -> list[dict]:
    train = (tokens or {}).get("splits", {}).get("train", {})
    rows = []
    for source in sources:
        name = source["name"]
        dataset = source["path"] + "".join(f" ({part})" for part in (source.get("config"), source.get("split"))
                                           if part and part != "train")
        report = prepared.get(name) or {}
        rows.append({"name": name, "dataset": f"`{dataset}`",
                     "revision": f"`{report['revision']}`" if report.get("revision") else
                     ("local files" if not HUB_ID.match(source["path"]) else "–"),
                     "rows": number(train.get(name, {}).get("rows", report.get("kept"))),
                     "tokens": number(train.get(name, {}).get("tokens")),
                     "planned": number(train.get(name, {}).get("plan", {}).get("planned_tokens"))})
    return rows


def tokens_line(tokens: dict | None, epochs: float) -> str:
    if tokens is None:
        return "Token counts: not recorded (reports/tokens.json missing)."
    splits = tokens.get("splits", {})
    train, validation = splits.get("train", {}).get("_total", {}), splits.get("validation", {}).get("_total", {})
    line = (f"Training tokens: {number(train.get('tokens'))} ({number(train.get('learned'))} learned, the rest are "
            f"prompts); validation: {number(validation.get('tokens'))} tokens in {number(validation.get('rows'))} "
            f"rows. Sequences of at most {number(tokens.get('max_seq_length'))} tokens.")
    planned = sum(entry.get("plan", {}).get("planned_tokens", 0) for name, entry in splits.get("train", {}).items()
                  if name != "_total")
    return line + (f" The plan asked for {number(planned)} training tokens an epoch, for {number(epochs)} epochs."
                   if planned else "")


def base_facts(model_id: str, source: dict | None) -> tuple[str | None, str]:
    """(the Hub id for the card's `base_model`, or None for a local checkpoint; the sentence naming it)."""
    hub_id = model_id if HUB_ID.match(model_id) and not Path(model_id).exists() else None
    if source is None:
        return hub_id, f"`{model_id}` (models/base/source.json missing: revision not recorded)."
    revision = source.get("revision")
    where = f"`{source['id']}`" + (f" at revision `{revision}`" if revision else "")
    if source["id"] != model_id:
        where = f"`{model_id}`, as {where}" + (f" (file {source['file']})" if source.get("file") else "")
    return hub_id, where + "."


def license_of(model_id: str) -> tuple[str, str]:
    """Gemma 1-3 come under Google's Gemma terms; Gemma 4 under Apache 2.0."""
    if re.search(r"gemma-?4", model_id, re.IGNORECASE):
        return "apache-2.0", APACHE_TERMS
    return "gemma", GEMMA_TERMS


def facts(dumped: dict, reports: Path = paths.REPORTS, base_source: Path = paths.BASE_SOURCE) -> dict:
    """Everything both cards say, read from the run's files. `dumped`: the params as a dict (Params.model_dump())."""
    model_id = dumped["model"]["id"]
    hub_id, base_line = base_facts(model_id, read_json(base_source))
    sources = named_sources(dumped["data"]["sources"])
    tokens = read_json(reports / paths.TOKENS_REPORT.name)
    evaluation = read_json(reports / paths.EVAL_REPORT.name)
    license_id, terms = license_of(model_id)
    return {
        "model_id": model_id,
        "base_model": hub_id,
        "base_line": base_line,
        "datasets": [s["path"] for s in sources if HUB_ID.match(s["path"]) and not Path(s["path"]).exists()],
        "data_rows": data_rows(sources, prepare_reports(reports), tokens),
        "tokens_line": tokens_line(tokens, dumped["train"]["num_train_epochs"]),
        "train_params": [(key, f"`{value}`" if isinstance(value, (list, str)) else value)
                         for key, value in dumped["train"].items()],
        "eval_rows": [{**row, "base": number(row["base"]), "tuned": number(row["tuned"]),
                       "delta": signed(row["delta"])} for row in evaluation_rows(evaluation or {})],
        "eval_missing": "reports/eval.json missing (run the evaluate stage)" if evaluation is None else
        "reports/eval.json holds no base/tuned measures",
        "license": license_id,
        "terms": terms,
    }


def _card(facts: dict, data: ModelCardData, title: str, summary: str, usage: str) -> ModelCard:
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + BODY, title=title,
                                   summary=summary, usage=usage, **facts)


def adapter_card(facts: dict, repo_id: str = "<your-namespace>/<repo>") -> ModelCard:
    name = facts["model_id"].split("/")[-1]
    data = ModelCardData(base_model=facts["base_model"], library_name="peft", license=facts["license"],
                         language=["tr"], datasets=facts["datasets"] or None, pipeline_tag="text-generation",
                         tags=["turkish", "gemma", "lora", "qlora", "peft", "trl", "dvc"],
                         base_model_relation="adapter" if facts["base_model"] else None)
    summary = (f"A LoRA adapter that teaches `{facts['model_id']}` Turkish: continued training on filtered Turkish "
               "web text, Wikipedia and instruction chats, by a reproducible DVC pipeline.")
    return _card(facts, data, f"{name} Turkish (LoRA adapter)", summary, ADAPTER_USAGE.format(repo=repo_id))


def gguf_card(facts: dict, gguf_file: str, gguf_type: str) -> ModelCard:
    name = facts["model_id"].split("/")[-1]
    data = ModelCardData(base_model=facts["base_model"], license=facts["license"], language=["tr"],
                         datasets=facts["datasets"] or None, pipeline_tag="text-generation",
                         tags=["turkish", "gemma", "gguf", "llama.cpp", "ollama"])
    summary = (f"`{facts['model_id']}` with its Turkish LoRA adapter merged in, as one GGUF file ({gguf_type}) "
               "for llama.cpp and Ollama. The evaluation below is of the adapter on the bf16 model, before "
               "conversion.")
    return _card(facts, data, f"{name} Turkish ({gguf_type} GGUF)", summary,
                 GGUF_USAGE.format(file=gguf_file, gguf_type=gguf_type))
