"""export: the adapter as people run it: merged, as a GGUF for llama.cpp and Ollama, and with Hub model cards.

Input: models/base/, models/adapter/, the run's reports (reports/eval.json, tokens.json, prepare) and params.
Output:
- models/merged/: with `export.merge: true`, the adapter merged into the base in bf16 with the tokenizer (a
  transformers checkpoint); otherwise only a README saying how to get one: a merged 27B checkpoint is ~54 GB,
  which most users do not want in their DVC cache and remote;
- models/gguf/: with `export.gguf` set (q8_0, q4_k_m, ...), `<model>-tr-<type>.gguf` made by llama.cpp's own
  converter and quantizer from the merged weights (pipeline/gguf.py), an Ollama `Modelfile` and the GGUF's
  model card (README.md); otherwise only a note;
- models/card/README.md: the adapter's Hub model card (pipeline/model_card.py). The train stage owns
  models/adapter/, so the card lives beside it; tools/publish.py uploads it as the adapter's README.md.
The merge runs on the unquantised base in bf16 (merging into 4-bit weights would round the adapter away), on
the CPU: it needs RAM for the whole bf16 model. With a GGUF but no `export.merge`, the merged weights are
written to a temporary folder and removed after the conversion.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from pipeline import gguf, model_card, paths
from pipeline.atomic import atomic_dir
from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.params import Params

ADAPTER, BASE, OUT, GGUF, CARD = paths.ADAPTER, paths.BASE, paths.MERGED, paths.GGUF, paths.CARD
log = logging.getLogger("export")

DISABLED = """# No merged checkpoint

`export.merge` is false, so the export stage wrote only this note. The adapter is in models/adapter; to get a
standalone checkpoint, run `dvc exp run -S export.merge=true` (or set it in params.yaml and `dvc repro
export`); training is not rerun.
"""
NO_GGUF = """# No GGUF

`export.gguf` is null, so the export stage wrote only this note. For llama.cpp and Ollama, run
`dvc exp run -S export.gguf=q4_k_m` (or q8_0, ...); training is not rerun. Then `dvc pull models/gguf` fetches
the GGUF, its Ollama Modelfile and its model card, and nothing else.
"""


def gguf_name(model_id: str, kind: str) -> str:
    return f"{model_id.rstrip('/').split('/')[-1]}-tr-{kind}.gguf"


def merge(out: Path) -> str:
    """The adapter merged into the bf16 base, saved with the tokenizer and chat template; its model_type."""
    from peft import PeftModel

    from pipeline.models import load_causal_lm, load_tokenizer

    base = load_causal_lm(dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, str(ADAPTER)).merge_and_unload()
    merged.save_pretrained(out)
    load_tokenizer().save_pretrained(out)
    return merged.config.model_type


def write_gguf(merged: Path, out: Path, kind: str, model_type: str, facts: dict, model_id: str) -> dict:
    name = gguf_name(model_id, kind)
    gguf.write_gguf(merged, out / name, kind)
    (out / "Modelfile").write_text(gguf.modelfile(name, gguf.family(model_type)), encoding="utf-8")
    model_card.gguf_card(facts, name, kind).save(out / "README.md")
    return {"file": str(GGUF / name), "type": kind, "bytes": (out / name).stat().st_size}


def run(params: Params) -> dict:
    if not (ADAPTER / "adapter_config.json").exists():
        raise PipelineError(f"{ADAPTER}: missing; run the pipeline or `dvc pull {ADAPTER}` first")
    kind = params.export.gguf
    if kind:
        gguf.check_tools(kind)
    base_bytes = sum(p.stat().st_size for p in BASE.glob("*.safetensors"))
    if params.export.merge or kind:  # the merged weights are at most the size of the base's; a GGUF as much again
        require_free(OUT.parent, base_bytes * (1 + 2 * bool(kind)), "export")
    facts = model_card.facts(params.model_dump())
    report: dict = {"merged": bool(params.export.merge), "gguf": None, "card": str(CARD / "README.md")}
    with atomic_dir(OUT) as merged_out, atomic_dir(GGUF) as gguf_out, atomic_dir(CARD) as card_out:
        model_card.adapter_card(facts).save(card_out / "README.md")
        if not params.export.merge:
            (merged_out / "README.md").write_text(DISABLED, encoding="utf-8")
        if not kind:
            (gguf_out / "README.md").write_text(NO_GGUF, encoding="utf-8")
        if params.export.merge:
            model_type = merge(merged_out)
            if kind:
                report["gguf"] = write_gguf(merged_out, gguf_out, kind, model_type, facts, params.model.id)
        elif kind:
            with tempfile.TemporaryDirectory(dir=OUT.parent, prefix=".merged-for-gguf-") as tmp:
                model_type = merge(Path(tmp))
                report["gguf"] = write_gguf(Path(tmp), gguf_out, kind, model_type, facts, params.model.id)
    if params.export.merge:
        report["path"] = str(OUT)
    log.info("export: %s", report)
    return report


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
