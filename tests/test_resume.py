"""A training run killed with SIGKILL resumes from its last checkpoint and ends where an uninterrupted run ends."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pipeline.experiment import merged
from stages import base_model, filter as filter_stage, prepare, tokenize
from tests.test_data_stages import DEMO_SOURCES, params_with
from tests.tiny import REPO

TRAIN = {"max_steps": 30, "save_steps": 3, "eval_steps": 1000, "logging_steps": 1, "learning_rate": 1e-2,
         "per_device_train_batch_size": 2, "gradient_checkpointing": False}


@pytest.fixture
def tokenized(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    overlay = {"model": {"id": str(tiny_model_dir), "gguf_package": None}, "data": {"sources": DEMO_SOURCES},
               "filter": {"validation_fraction": 0.15}, "tokenize": {"max_seq_length": 128}, "train": TRAIN}
    params = params_with(overlay)
    for stage in (base_model, prepare, filter_stage, tokenize):
        stage.run(params)
    # the stage's command line reads ./params.yaml, as under dvc repro
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged(defaults, overlay), allow_unicode=True))
    return tmp_path


def train(wait=True):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        return output
    return process


def adapter() -> dict:
    return load_file("models/adapter/adapter_model.safetensors")


def test_sigkill_mid_training_resumes_and_matches_an_uninterrupted_run(tokenized):
    train()
    reference = adapter()
    shutil.rmtree("models/checkpoints")
    shutil.rmtree("models/adapter")

    process = train(wait=False)
    deadline = time.time() + 300
    while not Path("models/checkpoints/checkpoint-9/trainer_state.json").exists():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not Path("models/adapter").exists()  # the killed run left no adapter behind
    done = sorted(int(p.name.split("-")[1]) for p in Path("models/checkpoints").glob("checkpoint-*"))
    assert 9 <= done[-1] < 30

    output = train()
    assert "resuming from models/checkpoints/checkpoint-" in output
    resumed = adapter()
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-5), name


def test_checkpoints_of_other_params_are_not_resumed(tokenized):
    train()
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"]["lora_r"] = 4
    Path("params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    output = train()
    assert "belong to other params or data; starting afresh" in output
    assert "resuming" not in output
