"""Outputs that appear whole or not at all: a failed or killed stage leaves the previous output as it was, and
nothing downstream ever reads a half-written file. Everything is written beside its final place and renamed."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def replace_dir(path: Path, new: Path) -> None:
    """`new` takes the place of `path` (which may not exist)."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        new.rename(path)
        shutil.rmtree(old)
    else:
        new.rename(path)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        replace_dir(path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path | str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path | str, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
