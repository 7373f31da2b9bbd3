import os
import shutil
import subprocess
from pathlib import Path

import pytest

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


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A copy of the repository's tracked files in a fresh git repo, as a clone would have them; cwd is there."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path
