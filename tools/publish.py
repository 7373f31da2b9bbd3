"""Publish the trained adapter (and the GGUF) on the Hugging Face Hub.

    python -m tools.publish <repo_id> [--gguf] [--private]

Uploads models/adapter with the export stage's model card (models/card/README.md) as its README, in one
commit, to <repo_id>; with --gguf also models/gguf (the GGUF, its Ollama Modelfile and its card) to
<repo_id>-GGUF: the Hub's GGUF listing and `ollama run hf.co/<repo>` expect a repository of GGUF files, and each
card's metadata differs (PEFT adapter vs GGUF). The token is read from HF_TOKEN (a write token) and is never
written or printed. Run `dvc pull models/adapter models/card` (and `models/gguf`) first when the run happened
elsewhere.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.paths import ADAPTER

CARD = Path("models/card/README.md")
GGUF = Path("models/gguf")


class PublishError(Exception):
    """A missing token or file; the message is the one line the user sees."""


def adapter_files() -> list[tuple[Path, str]]:
    """(local file, path in the repository) of the adapter; its README is the export stage's model card, not the
    placeholder PEFT writes."""
    if not (ADAPTER / "adapter_config.json").is_file():
        raise PublishError(f"{ADAPTER}: no adapter (adapter_config.json missing); run the pipeline or "
                           f"`dvc pull {ADAPTER}`")
    if not CARD.is_file():
        raise PublishError(f"{CARD}: no model card; run the export stage (`dvc repro export`) or `dvc pull {CARD.parent}`")
    files = [(path, path.relative_to(ADAPTER).as_posix()) for path in sorted(ADAPTER.rglob("*"))
             if path.is_file() and path.name != "README.md"]
    return files + [(CARD, "README.md")]


def gguf_files() -> list[tuple[Path, str]]:
    if not list(GGUF.glob("*.gguf")):
        raise PublishError(f"{GGUF}: no GGUF file; set export.gguf (e.g. `dvc exp run -S export.gguf=q4_k_m`) "
                           f"or `dvc pull {GGUF}`")
    return [(path, path.name) for path in sorted(GGUF.iterdir()) if path.is_file()]


def uploads(repo_id: str, gguf: bool) -> list[tuple[str, list[tuple[Path, str]]]]:
    """What goes where: [(repository id, [(local file, path in the repository)])]. Every file is checked
    before anything is uploaded."""
    plan = [(repo_id, adapter_files())]
    if gguf:
        plan.append((f"{repo_id}-GGUF", gguf_files()))
    return plan


def publish(repo_id: str, gguf: bool = False, private: bool = False, api=None) -> list[str]:
    """Create the repositories (kept if they exist) and upload each in one commit; the commits' URLs."""
    from huggingface_hub import CommitOperationAdd, HfApi

    token = os.environ.get("HF_TOKEN")
    if not token:
        raise PublishError("HF_TOKEN is not set: export a Hugging Face write token (huggingface.co/settings/tokens)")
    plan = uploads(repo_id, gguf)
    api = api or HfApi(token=token)
    urls = []
    for repo, files in plan:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        commit = api.create_commit(
            repo, repo_type="model", commit_message="Upload Turkish Gemma adapter from the DVC pipeline"
            if repo == repo_id else "Upload GGUF for llama.cpp and Ollama",
            operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for path, name in files])
        urls.append(commit.commit_url)
    return urls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo_id", help="the Hub repository to create or update, e.g. your-name/gemma-3-27b-tr")
    parser.add_argument("--gguf", action="store_true", help="also upload models/gguf to <repo_id>-GGUF")
    parser.add_argument("--private", action="store_true", help="create the repositories private")
    args = parser.parse_args(argv)
    from huggingface_hub.errors import HFValidationError

    try:
        for url in publish(args.repo_id, gguf=args.gguf, private=args.private):
            print(url)
    except PublishError as exc:
        sys.exit(f"error: {exc}")
    except HFValidationError as exc:
        sys.exit(f"error: repo_id {args.repo_id!r}: {str(exc).strip().splitlines()[0]}")
    except OSError as exc:  # the Hub's HTTP errors (bad token, no write access) and no network: its first line says which
        sys.exit(f"error: uploading to {args.repo_id} failed: {str(exc).strip().splitlines()[0] or type(exc).__name__}")


if __name__ == "__main__":
    main()
