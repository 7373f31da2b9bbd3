"""What a run needs to be reproduced exactly: the code's git commit, library versions, resolved Hub revisions."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version

from pipeline.errors import PipelineError

LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "deepspeed", "dvc",
             "lingua-language-detector", "datasketch", "lm-eval")


def git_commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": dirty}


def environment() -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"git": git_commit(), "python": platform.python_version(), "libraries": versions}


def hub_dataset_revision(path: str, revision: str | None, param: str) -> str:
    """The commit a Hub dataset id and branch resolve to now: what the stage reads and the report records. The
    preflight too: a dataset that is gated (and HF_TOKEN lacks access), missing or unreachable stops the stage
    here with one line, before anything is downloaded."""
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(path, revision=revision, token=os.environ.get("HF_TOKEN")).sha
    except Exception as exc:  # noqa: BLE001 - offline, gated, unknown: one line whatever the cause
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            reason = "HF_HUB_OFFLINE=1 is set"
        raise PipelineError(f"{param}: cannot reach the Hub dataset {path!r} (gated ones need HF_TOKEN with "
                            f"access): {reason}") from None
