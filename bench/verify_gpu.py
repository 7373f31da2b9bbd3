"""Run base_model -> tokenize -> train -> evaluate for real on a GPU and check what QLoRA must get right.

    python bench/verify_gpu.py NAME --model DIR [--overlay YAML ...] [--accelerate-config CFG --num-processes N]

Input data/plan/ and data/filtered/ come from the demo's plan, prepare and filter stages (configs/demo.yaml's
data and filter sections; run on the CPU, carried over). Checks:
the loss falls, the saved adapter is not empty (every lora_B trained away from its zero init), and the
adapter reloaded with PEFT reproduces the trainer's final held-out loss; with export.merge, the export stage's
merged checkpoint gives the adapted model's logits; with train.fused_lora, the fused projections (float8
products with train.float8_products) give PEFT's held-out loss with the trained adapter. Overlays apply in order
over params.yaml (the defaults: packing, varlen attention, Liger, bf16 cast, activation offloading, fused LoRA).
Writes bench/results/NAME.json (card, library versions, tokens/s, peak memory, the checks) and copies it to
$OUT when that is set.
It replaces models/, data/tokenized/ and reports/ of the checkout it runs in: run it on the device machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.record import save  # noqa: E402
from tools.experiment import merged  # noqa: E402
from pipeline.params import validate  # noqa: E402
from pipeline.provenance import environment  # noqa: E402



def stage(name: str, params: Path) -> None:
    command = [sys.executable, "-m", f"stages.{name}", "--params", str(params)]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def adapter_checks() -> dict:
    from safetensors.torch import load_file

    weights = load_file(ROOT / "models/adapter/adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    return {
        "adapter_tensors": len(weights),
        "adapter_parameters": int(sum(v.numel() for v in weights.values())),
        "lora_B_tensors_nonzero": sum(bool(v.abs().sum() > 0) for v in lora_b.values()),
        "lora_B_tensors": len(lora_b),
    }


def merged_matches_adapter() -> bool:
    """The export stage's checkpoint against the bf16 base with the adapter applied by PEFT, same tokens."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[2, 20, 30, 40, 50, 60, 70]], device="cuda")
    with torch.no_grad():
        merged_logits = AutoModelForCausalLM.from_pretrained(
            ROOT / "models/merged", dtype=torch.bfloat16, device_map="cuda").eval()(input_ids=ids).logits.float()
        base = AutoModelForCausalLM.from_pretrained(ROOT / "models/base", dtype=torch.bfloat16, device_map="cuda")
        adapted = PeftModel.from_pretrained(base, str(ROOT / "models/adapter")).eval()
        expected = adapted(input_ids=ids).logits.float()
        with adapted.disable_adapter():
            untouched = adapted(input_ids=ids).logits.float()
    error, effect = (merged_logits - expected).abs().max().item(), (untouched - expected).abs().max().item()
    print(f"merged vs adapter: max |diff| {error:.4f}; adapter's own effect {effect:.4f}")
    return error < 0.1 * effect


def fused_matches_peft(float8: bool) -> dict:
    """The trained adapter on the 4-bit base: held-out loss through PEFT's layers, then through the fused
    projections (pipeline/fused_lora.py, with float8 products when training had them) on the same model and
    rows. Equal up to bf16 (or e4m3) rounding, or training and serving computed different models."""
    import torch
    from datasets import load_from_disk
    from peft import PeftModel

    from pipeline.fused_lora import fuse
    from pipeline.models import load_base
    from stages.evaluate import row_losses, summarise

    rows = load_from_disk(str(ROOT / "data/tokenized/validation")).select_columns(["input_ids", "labels"]).to_list()
    model = PeftModel.from_pretrained(load_base(), str(ROOT / "models/adapter")).eval()

    def loss(label: str) -> float:  # token-weighted, as the evaluate stage reports it
        return summarise(row_losses(model, rows, 8, 0, label), [])["loss"]

    with torch.no_grad():
        with model.disable_adapter():
            losses = {"base": loss("base")}
        losses["peft"] = loss("peft")
        fuse(model, float8=float8)
        losses["fused"] = loss("fused")
    difference, effect = abs(losses["fused"] - losses["peft"]), abs(losses["base"] - losses["peft"])
    print(f"held-out loss: PEFT {losses['peft']:.5f}, fused {losses['fused']:.5f}, base {losses['base']:.5f}")
    return {"losses": losses, "ok": difference < 5e-3 * losses["peft"] and difference < 0.05 * effect}


def trainer_history(root: Path = ROOT) -> list[dict]:
    """The trainer's log (losses, evaluations) from the last checkpoint under `root`/models/checkpoints."""
    checkpoints = sorted((root / "models/checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--model", required=True, help="checkpoint directory (bench/make_model.py writes one)")
    parser.add_argument("--overlay", type=Path, nargs="+", default=[ROOT / "bench/gpu_overlay.yaml"])
    parser.add_argument("--accelerate-config")
    parser.add_argument("--num-processes", type=int, default=1)
    args = parser.parse_args()

    import torch

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    raw = merged(raw, {key: demo[key] for key in ("data", "filter")})  # where the carried data/ came from
    raw = merged(raw, {"train": {"num_processes": args.num_processes}
                       | ({"accelerate_config": args.accelerate_config} if args.accelerate_config else {})})
    for overlay in args.overlay:
        raw = merged(raw, yaml.safe_load(overlay.read_text()))
    raw = merged(raw, {"model": {"id": args.model, "gguf_package": None}})
    config = validate(raw, " + ".join(map(str, args.overlay)))
    params = ROOT / f".{args.name}.params.yaml"
    params.write_text(yaml.safe_dump(raw, allow_unicode=True))
    for stale in ("models", "data/tokenized", "reports"):
        shutil.rmtree(ROOT / stale, ignore_errors=True)

    stage("base_model", params)
    stage("tokenize", params)
    stage("train", params)  # as dvc runs it: in process, or relaunched by itself under accelerate
    stage("evaluate", params)
    stage("export", params)

    history = trainer_history()
    train_losses = [e["loss"] for e in history if "loss" in e]
    eval_losses = [e["eval_loss"] for e in history if "eval_loss" in e]
    evaluation = json.loads((ROOT / "reports/eval.json").read_text())["validation"]
    held_out = evaluation["all"]  # the evaluate stage's headline: every validation row
    result = {
        "name": args.name,
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "gpus": torch.cuda.device_count(),
        "processes": args.num_processes,
        "accelerate_config": args.accelerate_config,
        "overlays": [str(o) for o in args.overlay],
        "path": {k: getattr(config.train, k) for k in ("attention", "liger", "bf16_cast", "activation_offloading",
                                                       "fused_lora", "float8_products",
                                                       "gradient_checkpointing")}
        | {"packing": config.tokenize.packing, "merge": config.export.merge},
        "model": json.loads((ROOT / "models/base/config.json").read_text()).get("architectures"),
        "versions": environment()["libraries"],
        "train": json.loads((ROOT / "reports/train.json").read_text()),
        "train_loss_first_last": [train_losses[0], train_losses[-1]],
        "eval_loss_by_step": eval_losses,
        "evaluate_stage": evaluation,
        **adapter_checks(),
    }
    result["checks"] = {
        "loss_finite_and_falling": all(map(lambda x: x == x and abs(x) != float("inf"), train_losses))
        and train_losses[-1] < train_losses[0],
        "adapter_not_empty": result["lora_B_tensors"] > 0
        and result["lora_B_tensors_nonzero"] == result["lora_B_tensors"],
        # Reloaded adapter (evaluate stage: 4-bit base + PEFT, token-weighted) vs the trainer's own last
        # evaluation (a mean of per-batch means): equal up to that weighting, so within 2 %.
        "reload_matches_trainer": abs(held_out["tuned"]["loss"] - eval_losses[-1]) < 0.02 * eval_losses[-1],
        "tuned_beats_base": held_out["tuned"]["loss"] < held_out["base"]["loss"],
    }
    if config.export.merge:
        result["checks"]["merged_matches_adapter"] = merged_matches_adapter()
    if config.train.fused_lora and torch.cuda.is_available():
        result["fused_vs_peft"] = fused_matches_peft(config.train.float8_products)
        result["checks"]["fused_matches_peft"] = result["fused_vs_peft"]["ok"]
    print(json.dumps(result, indent=2))
    save(args.name, result)


if __name__ == "__main__":
    main()
