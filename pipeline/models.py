"""Where the base model comes from, and loading it (tokenizer, model) the same way in every stage.

`models/base/` (written by the base_model stage) holds `source.json`: the model id and the resolved revision.
Local and converted checkpoints are stored there in full; Hub checkpoints are loaded by id at the pinned
commit from the Hugging Face cache, so 50 GB of weights are not copied into the DVC cache.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pipeline.chat import default_template
from pipeline.errors import PipelineError
from pipeline.paths import BASE, BASE_SOURCE


def source(base: Path = BASE) -> dict:
    try:
        return json.loads((base / BASE_SOURCE.name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{base / BASE_SOURCE.name}: missing; run the base_model stage first") from None


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


def load_base(base: Path = BASE):
    """The base model as training and evaluation use it: 4-bit NF4 with bf16 compute on CUDA (QLoRA),
    fp32 on CPU, where bitsandbytes' 4-bit layers and bf16 matmuls are too slow to train."""
    if not torch.cuda.is_available():
        return load_causal_lm(base)
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    # One whole 4-bit copy per process; never device_map="auto", which splits layers and breaks DeepSpeed/DDP.
    device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}
    return load_causal_lm(base, dtype=torch.bfloat16, quantization_config=quantization, device_map=device_map)


def lora_target_regex(modules: list[str]) -> str:
    """The language model's projections only: vision and audio towers also have q_proj/k_proj/v_proj, and
    Gemma 4's audio tower uses layers PEFT rejects."""
    return rf"^(?!.*(vision|audio)).*\.({'|'.join(modules)})$"


def needs_token_type_ids(model) -> bool:
    """Gemma 3 4B+ load as Gemma3ForConditionalGeneration, which in training requires token_type_ids
    (all zeros for text); TRL's collator does not add them."""
    return type(model).__name__ == "Gemma3ForConditionalGeneration"


ACTIVATION_RESERVE = 4 * 2**30  # activations, LoRA optimizer state and CUDA context for batch 4 x 2048


def four_bit_footprint(base: Path = BASE) -> int:
    """Bytes the QLoRA base takes on a GPU: linear layers in NF4 (~0.56 bytes a weight with double quant),
    embeddings kept unquantised and upcast to fp32 by prepare_model_for_kbit_training. Counted on an empty
    (meta) model, so nothing is loaded."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    name, revision = reference(base)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(name, revision=revision))
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    return int((total - embedding) * 0.56 + embedding * 4)


def check_gpu_memory(need: int, free: int, device: str) -> None:
    """Stop before loading when the base will not fit, instead of an out-of-memory error hours later."""
    if need + ACTIVATION_RESERVE > free:
        raise PipelineError(
            f"model.id: the 4-bit base needs about {need / 2**30:.1f} GiB plus {ACTIVATION_RESERVE / 2**30:.0f} GiB "
            f"for training, but {device} has {free / 2**30:.1f} GiB free; use a larger GPU or a smaller model"
        )
