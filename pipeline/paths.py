"""Every file and folder the stages hand each other, named once. dvc.yaml spells the same paths."""
from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

# plan: what the budget buys, per source (prepare and tokenize read these, never the whole plan report)
PLAN = Path("data/plan")
PLAN_REPORT = Path("reports/plan.json")

# data, in the order the stages write it
PREPARED = Path("data/prepared")  # <source>/part-*.parquet, one folder per source
FILTERED = Path("data/filtered")  # train/ and validation/ parquet shards
TOKENIZED = Path("data/tokenized")  # train/ and validation/ datasets on disk

# models
BASE = Path("models/base")
BASE_SOURCE = BASE / "source.json"
ADAPTER = Path("models/adapter")
CHECKPOINTS = Path("models/checkpoints")
MERGED = Path("models/merged")
GGUF = Path("models/gguf")  # the GGUF, its Ollama Modelfile and card: `dvc pull models/gguf` fetches them alone
CARD = Path("models/card")  # the adapter's Hub model card (train owns models/adapter)

# reports: details (provenance, per-source and per-rule counts) and the few metrics experiments compare
REPORTS = Path("reports")
METRICS = REPORTS / "metrics"
PREPARE_REPORTS = REPORTS / "prepare"  # <source>.json
FILTER_REPORT = REPORTS / "filter.json"
DATA_TABLE = REPORTS / "data.md"
TOKENS_REPORT = REPORTS / "tokens.json"
TRAIN_REPORT = REPORTS / "train.json"
TRAIN_LIVE = REPORTS / "train"  # dvclive: plots/ of the training curves
EVAL_REPORT = REPORTS / "eval.json"
EVAL_PLOT = REPORTS / "eval_plot.json"
SAMPLES = REPORTS / "samples.md"


def prepared(source: str) -> Path:
    return PREPARED / source


def plan_file(source: str) -> Path:
    return PLAN / f"{source}.json"


def metrics(stage: str) -> Path:
    return METRICS / f"{stage}.json"
