"""Where every benchmark writes its result: bench/results/NAME.json, and a copy in $OUT when set (the device
machine sends back only what is under $OUT)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, result: dict) -> Path:
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if os.environ.get("OUT"):
        shutil.copy(path, os.environ["OUT"])
    return path
