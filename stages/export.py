"""export: the adapter merged into the base model as a standalone checkpoint, when `export.merge` is true.

Input: models/base/, models/adapter/. Output: models/merged/ (a transformers checkpoint in bf16 with the
tokenizer), or, with `export.merge: false` (the default), only a README saying how to get one: a merged 27B
checkpoint is ~54 GB, which most users do not want in their DVC cache and remote. The merge runs on the
unquantised base in bf16 (merging into 4-bit weights would round the adapter away), on the CPU: it needs RAM
for the whole bf16 model.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.outputs import atomic_dir
from pipeline.params import Params

ADAPTER = Path("models/adapter")
OUT = Path("models/merged")
DISABLED = """# No merged checkpoint

`export.merge` is false, so the export stage wrote only this note. The adapter is in models/adapter; to get a
standalone checkpoint, run `dvc exp run -S export.merge=true` (or set it in params.yaml and `dvc repro
export`); training is not rerun.
"""


def run(params: Params) -> dict:
    from peft import PeftModel

    from pipeline.models import load_causal_lm, load_tokenizer

    if not (ADAPTER / "adapter_config.json").exists():
        raise PipelineError(f"{ADAPTER}: missing; run the pipeline or `dvc pull {ADAPTER}` first")
    if params.export.merge:  # the merged weights are at most the size of the base's
        require_free(OUT.parent, sum(p.stat().st_size for p in Path("models/base").glob("*.safetensors")),
                     "export.merge")
    with atomic_dir(OUT) as out:
        if not params.export.merge:
            (out / "README.md").write_text(DISABLED, encoding="utf-8")
            return {"merged": False}
        base = load_causal_lm(dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(base, str(ADAPTER)).merge_and_unload()
        merged.save_pretrained(out)
        load_tokenizer().save_pretrained(out)
    return {"merged": True, "path": str(OUT)}


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
