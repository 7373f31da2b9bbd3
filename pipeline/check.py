"""`python -m pipeline.check [FILE]`: the check DVC runs first whenever params.yaml changes (the `check` stage), and
the image's entry point before anything: an unknown section or key, a wrong type, a cross-field conflict or an
lm-eval task that does not exist stops the run in one line, before any stage touches an output."""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.params import load
from pipeline.paths import PARAMS


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else PARAMS)
    try:
        params = load(path)
        from pipeline.eval_sets import check_lm_eval_tasks  # lm-eval's task list: only for params that load

        check_lm_eval_tasks(params.evaluate)
    except PipelineError as exc:
        sys.exit(f"error: {exc}")
    print(f"{path}: valid")


if __name__ == "__main__":
    main()
