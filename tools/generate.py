"""generate: answer Turkish prompts with the base model plus the trained adapter (after `dvc pull`).

    python -m tools.generate "Türkiye'nin başkenti neresidir?" [--max-new-tokens 128] [--base]

Needs models/base (`dvc pull base_model`) and models/adapter (`dvc pull models/adapter`); for a Hub base model
models/base holds only the pinned revision and the weights come from the Hub (HF_TOKEN for gated ones).
A tool, not a pipeline stage: nothing in dvc.yaml depends on it.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

from pipeline.errors import PipelineError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--base", action="store_true", help="answer with the base model alone")
    args = parser.parse_args()
    try:
        from peft import PeftModel

        from pipeline.models import load_base, load_tokenizer
        from pipeline.paths import ADAPTER
        from stages.evaluate import generate

        if not ADAPTER.exists():
            raise PipelineError(f"{ADAPTER}: missing; fetch it with `dvc pull {ADAPTER}`")
        tokenizer = load_tokenizer()
        model = PeftModel.from_pretrained(load_base(), str(ADAPTER)).eval()
        with model.disable_adapter() if args.base else nullcontext():
            answers = generate(model, tokenizer, args.prompts, args.max_new_tokens)
    except PipelineError as exc:
        sys.exit(f"error: {exc}")
    for prompt, answer in zip(args.prompts, answers):
        print(f"> {prompt}\n{answer}\n")


if __name__ == "__main__":
    main()
