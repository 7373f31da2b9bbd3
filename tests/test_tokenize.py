"""The tokenize stage: each source's planned tokens, packing that keeps documents apart, labels."""
import json
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from pipeline.chat import IGNORE
from stages import base_model, filter as filter_stage, plan, tokenize
from tests.test_data_stages import DEMO_SOURCES, params_with, prepare_all
from tools.experiment import merged


@pytest.fixture
def filtered(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)

    def make(**overlay):
        """The test's params; the demo sources prepared and filtered whole (once), planned by these params."""
        # padded rows and SDPA unless a test asks for packing (params.yaml packs and uses the varlen kernel)
        base = {"model": {"id": str(tiny_model_dir), "gguf_package": None}, "data": {"sources": DEMO_SOURCES},
                "filter": {"validation_fraction": 0.15}, "tokenize": {"packing": False}, "train": {"attention": "sdpa"}}
        if not (tmp_path / "data/filtered").exists():
            whole = params_with(base)
            base_model.run(whole)
            prepare_all(whole)
            filter_stage.run(whole)
        params = params_with(merged(base, overlay))
        plan.run(params)
        return params

    return make


def test_each_source_keeps_its_planned_tokens_and_a_shortfall_is_reported(filtered, caplog):
    sources = {name: dict(source, weight=3.0 if name == "web" else 1.0) for name, source in DEMO_SOURCES.items()}
    # 2000 train tokens in all: 0.0002 GPU-hours at 10,000 tokens/s, one epoch
    params = filtered(data={"sources": sources}, tokenize={"max_seq_length": 256},
                      budget={"gpu_hours": 2000 / 3600 / 10_000, "tokens_per_second": 10_000},
                      train={"num_train_epochs": 1})
    report = tokenize.run(params)["splits"]["train"]
    assert report["web"]["plan"]["planned_tokens"] == 1200  # 2000 * 3 / 5
    assert report["wikipedia"]["plan"]["planned_tokens"] == 400
    for name in ("web", "wikipedia", "openhermes"):
        plan_report = report[name]["plan"]
        assert 0 < plan_report["kept_tokens"] <= plan_report["planned_tokens"] <= plan_report["available_tokens"]
    assert report["_total"]["tokens"] <= 2000
    assert tokenize.run(params)["splits"]["train"] == report  # the same rows every time

    many = filtered(data={"sources": sources}, tokenize={"max_seq_length": 256})  # far more than there is
    report = tokenize.run(many)["splits"]["train"]
    assert report["web"]["plan"]["share_of_plan"] < 0.95
    assert "web gave" in caplog.text and "data.sources.web.survival" in caplog.text


def test_packing_fills_rows_and_keeps_every_document(filtered):
    params = filtered(tokenize={"max_seq_length": 256})
    unpacked = tokenize.run(params)["splits"]["train"]["_total"]
    plain = load_from_disk("data/tokenized/train")
    packed_report = tokenize.run(filtered(tokenize={"max_seq_length": 256, "packing": True}))
    packed = load_from_disk("data/tokenized/train")
    assert packed_report["splits"]["train"]["_total"]["packed_rows"] == len(packed) < len(plain)
    assert all(len(ids) <= 256 for ids in packed["input_ids"])
    assert [sum(lengths) for lengths in packed["seq_lengths"]] == [len(ids) for ids in packed["input_ids"]]
    assert sorted(n for lengths in packed["seq_lengths"] for n in lengths) == sorted(plain["length"])
    assert sum(len(ids) for ids in packed["input_ids"]) == unpacked["tokens"]
    assert "packed_rows" not in json.loads(open("reports/tokens.json").read())["splits"]["validation"]["_total"]


def test_packed_documents_do_not_attend_to_each_other(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    torch.manual_seed(0)
    first, second = torch.randint(10, 300, (1, 40)), torch.randint(10, 300, (1, 30))
    with torch.no_grad():
        alone = model(input_ids=second, use_cache=False).logits
        packed_ids = torch.cat([first, second], dim=1)
        positions = torch.cat([torch.arange(40), torch.arange(30)]).unsqueeze(0)
        packed = model(input_ids=packed_ids, position_ids=positions, use_cache=False).logits[:, 40:]
        leaky = model(input_ids=packed_ids, use_cache=False).logits[:, 40:]  # one long document
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(leaky, alone, atol=1e-3)  # the check can fail: attention across documents shows


def test_labels_mask_only_prompts(filtered):
    tokenize.run(filtered(tokenize={"max_seq_length": 256}))
    rows = load_from_disk("data/tokenized/train")
    chats = [r for r in rows if r["source"] == "openhermes"]
    texts = [r for r in rows if r["source"] != "openhermes"]
    assert chats and all(IGNORE in r["labels"] and set(r["labels"]) != {IGNORE} for r in chats)
    assert texts and all(r["labels"] == r["input_ids"] for r in texts)


def test_training_runs_on_packed_rows(filtered):
    from stages import train

    params = filtered(tokenize={"max_seq_length": 256, "packing": True},
                      train={"max_steps": 2, "per_device_train_batch_size": 2, "eval_steps": 2, "save_steps": 2,
                             "logging_steps": 1, "gradient_checkpointing": False, "attention": "varlen"})
    tokenize.run(params)
    report = train.run(params)
    assert report["global_step"] == 2 and report["tokens"] > 0
    packed = load_from_disk("data/tokenized/train")
    first_two_rows = sum(len(ids) for ids in packed["input_ids"][:2])
    assert report["tokens"] >= first_two_rows // 2  # real tokens, not padding, were counted


def test_tokenize_checks_free_disk_before_writing(filtered, request):
    from pipeline.errors import PipelineError

    params = filtered(tokenize={"max_seq_length": 256})
    request.getfixturevalue("full_disk")  # after the fixture prepared the data on a disk with room
    with pytest.raises(PipelineError, match=r"^tokenize \(data/filtered\): needs about 1\.\d GiB free"):
        tokenize.run(params)
    assert not Path("data/tokenized").exists()
