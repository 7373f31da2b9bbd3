"""Run the pipeline as a DVC experiment with a params overlay: a partial params file applied via `-S`.

    python -m pipeline.experiment configs/demo.yaml [more `dvc exp run` arguments]

The overlay is merged into params.yaml and validated first, so a typo fails in a second instead of after
`dvc exp run` has started. Each leaf (lists count as leaves) becomes one `-S key=value` in Hydra's override
syntax, which is what `dvc exp run -S` parses.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.errors import PipelineError
from pipeline import params
from pipeline.params import PARAMS_FILE


def hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot express {type(value).__name__} as a DVC -S value")


def set_args(overlay: dict, prefix: str = "") -> list[str]:
    args = []
    for key, value in overlay.items():
        if isinstance(value, dict):
            args += set_args(value, f"{prefix}{key}.")
        else:
            args += ["-S", f"{prefix}{key}={hydra_value(value)}"]
    return args


def merged(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def validate(overlay_path: Path, params_path: Path = PARAMS_FILE) -> dict:
    overlay = yaml.safe_load(overlay_path.read_text(encoding="utf-8")) or {}
    base = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    params.validate(merged(base, overlay), f"{params_path} + {overlay_path}")
    return overlay


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m pipeline.experiment OVERLAY.yaml [dvc exp run arguments]")
    try:
        overlay = validate(Path(sys.argv[1]))
    except (PipelineError, OSError, yaml.YAMLError) as exc:
        sys.exit(f"error: {exc}")
    command = ["dvc", "exp", "run", *set_args(overlay), *sys.argv[2:]]
    sys.exit(subprocess.call(command))


if __name__ == "__main__":
    main()
