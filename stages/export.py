"""export: merge the trained adapter into the base model and save a standalone checkpoint (optional).

    python -m stages.export [--out models/merged]

Not part of `dvc repro`: a merged 27B checkpoint is ~54 GB in bf16, which most users do not want in their
DVC cache. The merge runs on the unquantised base in bf16 (merging into 4-bit weights would round the
adapter away), on the CPU unless a GPU has room; it needs RAM for the whole bf16 model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.outputs import atomic_dir

ADAPTER = Path("models/adapter")


def export(out: Path) -> Path:
    from peft import PeftModel

    from pipeline.models import load_causal_lm, load_tokenizer

    if not (ADAPTER / "adapter_config.json").exists():
        raise PipelineError(f"{ADAPTER}: missing; run the pipeline or `dvc pull {ADAPTER}` first")
    base = load_causal_lm(dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, str(ADAPTER)).merge_and_unload()
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        load_tokenizer().save_pretrained(tmp)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/merged"))
    args = parser.parse_args()
    try:
        print(f"merged checkpoint in {export(args.out)}")
    except PipelineError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
