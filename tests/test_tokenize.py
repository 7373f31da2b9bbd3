"""The tokenize stage: token budget by source weight, packing that keeps documents apart, the cost estimate."""
import json
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from pipeline.chat import IGNORE
from stages import base_model, filter as filter_stage, prepare, tokenize
from pipeline.experiment import merged
from tests.test_data_stages import DEMO_SOURCES, params_with


@pytest.fixture
def filtered(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)

    def make(**overlay):
        # padded rows and SDPA unless a test asks for packing (params.yaml packs and uses the varlen kernel)
        params = params_with(merged({"model": {"id": str(tiny_model_dir), "gguf_package": None},
                                     "data": {"sources": DEMO_SOURCES}, "filter": {"validation_fraction": 0.15},
                                     "tokenize": {"packing": False}, "train": {"attention": "sdpa"}}, overlay))
        if not (tmp_path / "data/filtered").exists():
            base_model.run(params)
            prepare.run(params)
            filter_stage.run(params)
        return params

    return make


def test_budget_splits_tokens_by_source_weight(filtered):
    sources = [dict(s, weight=3.0 if s["name"] == "web" else 1.0) for s in DEMO_SOURCES]
    params = filtered(data={"sources": sources}, tokenize={"max_seq_length": 256, "max_train_tokens": 2000})
    report = tokenize.run(params)["splits"]["train"]
    assert report["web"]["budget"]["share_tokens"] == 1200  # 2000 * 3 / 5
    assert report["wikipedia"]["budget"]["share_tokens"] == 400
    for name in ("web", "wikipedia", "openhermes"):
        assert 0 < report[name]["budget"]["tokens"] <= report[name]["budget"]["share_tokens"]
    assert report["_total"]["tokens"] <= 2000
    again = tokenize.run(params)["splits"]["train"]
    assert again == report  # the same rows every time


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


def test_cost_estimate_uses_measured_throughput_and_price(filtered):
    params = filtered(tokenize={"max_seq_length": 256}, train={"num_train_epochs": 3, "max_steps": -1},
                      hardware={"tokens_per_second": 1000, "gpus": 2, "usd_per_hour": 10.0})
    report = tokenize.run(params)
    tokens = report["splits"]["train"]["_total"]["tokens"]
    cost = report["cost"]
    assert cost["wall_hours"] == round(tokens * 3 / 2000 / 3600, 2)
    assert cost["usd"] == round(tokens * 3 / 2000 / 3600 * 10.0, 2)


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


def test_export_merges_the_adapter_into_a_standalone_checkpoint(filtered):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from stages import export, train

    params = filtered(tokenize={"max_seq_length": 256},
                      train={"max_steps": 2, "per_device_train_batch_size": 2, "eval_steps": 2, "save_steps": 2,
                             "learning_rate": 5e-2, "gradient_checkpointing": False}, export={"merge": False})
    tokenize.run(params)
    train.run(params)
    assert export.run(params) == {"merged": False}
    assert [p.name for p in Path("models/merged").iterdir()] == ["README.md"]  # no 54 GB unless asked
    assert export.run(params.model_copy(update={"export": params.export.model_copy(update={"merge": True})}))["merged"]
    ids = torch.tensor([[2, 20, 30, 40, 50]])
    merged = AutoModelForCausalLM.from_pretrained("models/merged", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained("models/base", dtype=torch.bfloat16)
    adapted = PeftModel.from_pretrained(base, "models/adapter").eval()
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits.float()
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=0.05)
        with adapted.disable_adapter():
            assert not torch.allclose(adapted(input_ids=ids).logits.float(), expected, atol=0.05)


def test_tokenize_checks_free_disk_before_writing(filtered, request):
    from pipeline.errors import PipelineError

    params = filtered(tokenize={"max_seq_length": 256})
    request.getfixturevalue("full_disk")  # after the fixture prepared the data on a disk with room
    with pytest.raises(PipelineError, match=r"^tokenize \(data/filtered\): needs about 1\.\d GiB free"):
        tokenize.run(params)
    assert not Path("data/tokenized").exists()
