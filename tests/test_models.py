"""LoRA targets of a multimodal Gemma 3 (vision tower untouched), the token_type_ids its training needs, which
params file the train stage reads to decide on an accelerate launch, and its refusal of float8 products on a
card without them."""
import torch
from peft import LoraConfig, get_peft_model

from pipeline.models import lora_target_regex, needs_token_type_ids
from stages.train import with_token_type_ids

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_multimodal():
    from bench.make_model import gemma3_multimodal_tiny

    return gemma3_multimodal_tiny(vocab_size=400)


def test_lora_reaches_the_language_model_only():
    model = tiny_multimodal()
    assert needs_token_type_ids(model)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=lora_target_regex(PROJECTIONS)))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in peft.named_modules() if name.endswith("lora_A")}
    assert adapted and all("language_model" in name for name in adapted)
    assert len(adapted) == 2 * len(PROJECTIONS)  # 2 decoder layers x 7 projections; none in the vision tower


def test_collator_adds_zero_token_type_ids():
    collate = with_token_type_ids(lambda examples: {"input_ids": torch.tensor([e["input_ids"] for e in examples])})
    batch = collate([{"input_ids": [2, 5, 6]}, {"input_ids": [2, 7, 8]}])
    assert torch.equal(batch["token_type_ids"], torch.zeros(2, 3, dtype=torch.long))


def test_train_decides_its_launch_from_the_params_file_it_was_given(tmp_path, monkeypatch):
    """`python -m stages.train --params FILE` with train.num_processes 2 there (1 in params.yaml) relaunches under
    accelerate, and the relaunched processes get the same --params."""
    import subprocess
    import sys

    import yaml

    import stages.train as train

    raw = yaml.safe_load(open("params.yaml", encoding="utf-8"))
    assert raw["train"]["num_processes"] == 1
    raw["train"]["num_processes"] = 2
    raw["train"]["accelerate_config"] = "configs/accelerate/zero2.yaml"
    params = tmp_path / "two.yaml"
    params.write_text(yaml.safe_dump(raw))
    started = []

    class Launcher:
        def __init__(self, command, **kwargs):
            started.append(command)
            self.stderr = iter(())

        def wait(self):
            return 0

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(subprocess, "Popen", Launcher)
    monkeypatch.setattr(sys, "argv", ["stages.train", "--params", str(params)])
    train.main()
    (command,) = started
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-3:] == ["stages.train", "--params", str(params)]


def test_train_refuses_float8_products_on_a_card_without_them(tmp_path, monkeypatch):
    """An A100 (compute capability 8.0) has no float8 tensor cores: one line naming the param, before any data
    or model is read; an H100 (9.0) gets past that check to the next (no tokenized data here)."""
    import pytest

    import stages.train as train
    from pipeline.errors import PipelineError
    from pipeline.params import load

    params = load()
    params = params.model_copy(update={"train": params.train.model_copy(update={"fused_lora": True,
                                                                               "float8_products": True})})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for card, capability, error in (("NVIDIA A100-SXM4-80GB", (8, 0), "train.float8_products: NVIDIA A100"),
                                    ("NVIDIA H100 80GB HBM3", (9, 0), "run the tokenize stage first")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_, c=capability: c)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_, n=card: n)
        with pytest.raises(PipelineError, match=error):
            train.run(params)
