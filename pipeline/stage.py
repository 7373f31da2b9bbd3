"""The thin command line every stage shares: load params, run, turn known failures into one line."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from pipeline.errors import PipelineError
from pipeline.params import Params, load


def main(run: Callable[[Params], dict], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run(load(args.params))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; outputs of this stage were left as they were", file=sys.stderr)
        sys.exit(130)
