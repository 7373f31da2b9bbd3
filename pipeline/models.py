"""Where the base model comes from, and loading it (tokenizer, model) the same way in every stage.

`models/base/` (written by the base_model stage) holds `source.json`: the model id and the resolved revision.
Local and converted checkpoints are stored there in full; Hub checkpoints are loaded by id at the pinned
commit from the Hugging Face cache, so 50 GB of weights are not copied into the DVC cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.chat import default_template
from pipeline.errors import PipelineError

BASE = Path("models/base")
SOURCE_FILE = "source.json"


def source(base: Path = BASE) -> dict:
    try:
        return json.loads((base / SOURCE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{base / SOURCE_FILE}: missing; run the base_model stage first") from None


def reference(base: Path = BASE) -> tuple[str, str | None]:
    """(name or path, revision) to pass to from_pretrained."""
    if (base / "config.json").exists():
        return str(base), None
    info = source(base)
    return info["id"], info["revision"]


def load_tokenizer(base: Path = BASE):
    from transformers import AutoTokenizer

    name, revision = reference(base)
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = default_template(tokenizer)
    return tokenizer


def load_causal_lm(base: Path = BASE, **kwargs):
    from transformers import AutoModelForCausalLM

    name, revision = reference(base)
    kwargs.setdefault("dtype", torch.float32)
    return AutoModelForCausalLM.from_pretrained(name, revision=revision, attn_implementation="sdpa", **kwargs)
