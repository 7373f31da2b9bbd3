"""Run the pipeline as a DVC experiment with a params overlay: a partial params file laid over params.yaml.

    python -m tools.experiment configs/demo.yaml [more `dvc exp run` arguments]

The overlay is merged into params.yaml and validated first, so a typo fails in a second instead of after
`dvc exp run` has started. The merged params are written to params.yaml (comments and order kept, as
`dvc exp run -S` would) and `dvc exp run` records them. `data.sources` is replaced, not merged: an overlay that
lists sources means those sources, in that order (which `-S` cannot express: Hydra keeps a mapping's order).
DVC's warnings about outputs that no earlier run has made ("No file hash info found") are left out.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from pipeline import params
from pipeline.errors import PipelineError
from pipeline.paths import PARAMS

REPLACED = ("data", "sources")  # a mapping the overlay replaces whole
NOISE = "No file hash info found for"


def merged(base: dict, overlay: dict, replaced: tuple | None = REPLACED, prefix: tuple = ()) -> dict:
    """`overlay` laid over `base` (either plain or ruamel's round-trip mappings, which this updates in place);
    the mapping at `replaced` is replaced whole (None: every mapping is merged, as `dvc exp run -S` does)."""
    for key, value in overlay.items():
        path = (*prefix, key)
        if isinstance(value, dict) and path != replaced and isinstance(base.get(key), dict):
            merged(base[key], value, replaced, path)
        else:
            base[key] = value
    return base


def validate(overlay_path: Path, params_path: Path = PARAMS) -> dict:
    """The overlay, once params.yaml with it laid over is valid."""
    overlay = yaml.safe_load(overlay_path.read_text(encoding="utf-8")) or {}
    base = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    params.validate(merged(base, overlay), f"{params_path} + {overlay_path}")
    return overlay


def apply(overlay: dict, params_path: Path = PARAMS, replaced: tuple | None = REPLACED) -> None:
    document = YAML()  # round trip: the file keeps its comments and order
    document.width = 4096
    data = document.load(params_path.read_text(encoding="utf-8"))
    merged(data, overlay, replaced)
    with params_path.open("w", encoding="utf-8") as handle:
        document.dump(data, handle)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m tools.experiment OVERLAY.yaml [dvc exp run arguments]")
    try:
        apply(validate(Path(sys.argv[1])))
    except (PipelineError, OSError, yaml.YAMLError) as exc:
        sys.exit(f"error: {exc}")
    process = subprocess.Popen(["dvc", "exp", "run", *sys.argv[2:]], stderr=subprocess.PIPE, text=True,
                               errors="replace")
    for line in process.stderr:
        if NOISE not in line:
            sys.stderr.write(line)
    sys.exit(process.wait())


if __name__ == "__main__":
    main()
