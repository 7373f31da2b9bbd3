import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pipeline.params import load  # noqa: E402
from tests.tiny import REPO, tiny_gemma3, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-gemma3")
    tiny_gemma3(directory)
    return directory


@pytest.fixture(scope="session")
def gemma3_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def gemma4_tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tiny-gemma4-tokenizer"), "gemma4")


@pytest.fixture
def params():
    return load(REPO / "params.yaml")


GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t"]


def copy_repository(target: Path) -> Path:
    """The repository's tracked and new files in a fresh git repo at `target`, as a clone would have them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", *GIT_USER, "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=target, check=True)
    return target


def tiny_overlay(project: Path, model_dir: Path) -> Path:
    """configs/demo.yaml with the tiny model in place of the 270M and a few fast steps."""
    overlay = yaml.safe_load((project / "configs/demo.yaml").read_text(encoding="utf-8"))
    overlay["model"] = {"id": str(model_dir), "gguf_package": None}
    overlay["tokenize"] = {"max_seq_length": 512}  # the tiny tokenizer spends ~3 tokens a word: chats fit
    overlay["train"].update(max_steps=6, per_device_train_batch_size=4, learning_rate=2e-2, eval_steps=3,
                            save_steps=3, logging_steps=1)
    path = project / "tiny.yaml"
    path.write_text(yaml.safe_dump(overlay, allow_unicode=True, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A copy of the repository in a fresh git repo; cwd is there."""
    copy_repository(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def full_disk(monkeypatch):
    """Every file system reports 1 MiB free (for the disk preflights)."""
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**40, 2**40, 2**20))
