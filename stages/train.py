"""train: LoRA on the base model with TRL's SFTTrainer; QLoRA (4-bit NF4) on CUDA, plain LoRA in fp32 on CPU.

Input: data/tokenized/, models/base/. Output: models/adapter/ (adapter + tokenizer), checkpoints in
models/checkpoints/ (kept across runs: a stopped run resumes from the last one), reports/train.json and
reports/metrics/train.json (the whole run's steps, tokens, time and loss, across resumes) and the dvclive
curves in reports/train/. One process trains here; with `train.num_processes` > 1 (or a DeepSpeed
`train.accelerate_config`) the stage relaunches itself under `accelerate launch`, one process per GPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time

import torch
import yaml
from transformers import TrainerCallback
from transformers.integrations import DVCLiveCallback
from transformers.trainer_callback import ExportableState

from pipeline.attention import register_varlen_attention
from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.fused_lora import fuse
from pipeline.models import (
    check_gpu_memory,
    four_bit_footprint,
    load_base,
    load_tokenizer,
    lora_target_regex,
    needs_token_type_ids,
    source,
)
from pipeline import paths
from pipeline.atomic import atomic_dir, write_json
from pipeline.params import Params
from pipeline.provenance import environment

FINGERPRINT = paths.CHECKPOINTS / "fingerprint.json"
# what may differ between a stopped run and the run that resumes it: how often it logs, evaluates and saves
CADENCE = {"logging_steps", "eval_steps", "save_steps"}
log = logging.getLogger("train")


class RunClock(TrainerCallback, ExportableState):
    """Training time over the whole run: saved in each checkpoint's trainer state and restored on resume
    (transformers' stateful callbacks), so a resumed run reports its full time, not its last part."""

    def __init__(self, seconds_before: float = 0.0):
        self.seconds_before = seconds_before
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def state(self) -> dict:
        return {"args": {}, "attributes": {"seconds_before": self.seconds()}}


class LiveCallback(DVCLiveCallback):
    """transformers' DVCLiveCallback counts its own steps (one per log call); plots need the optimizer step."""

    def on_log(self, args, state, control, **kwargs):
        self.live.step = state.global_step
        super().on_log(args, state, control, **kwargs)


def live_callbacks(resume: bool) -> list:
    try:
        from dvclive import Live
    except ImportError:  # e.g. a bare GPU box running the stage by hand; the project's image has dvclive
        log.warning("dvclive is not installed: no training curves in %s", paths.TRAIN_LIVE)
        return []
    if resume:  # a stop while dvclive rewrote a summary leaves it torn; dvclive rewrites it whole at the next log
        for name, parse in (("metrics.json", json.loads), ("params.yaml", yaml.safe_load)):
            try:
                parse((paths.TRAIN_LIVE / name).read_text(encoding="utf-8"))
            except FileNotFoundError:
                pass
            except (ValueError, yaml.YAMLError):
                (paths.TRAIN_LIVE / name).unlink()
    return [LiveCallback(Live(str(paths.TRAIN_LIVE), resume=resume, save_dvc_exp=False, dvcyaml=False))]


def fingerprint(params: Params) -> dict:
    """What a checkpoint must share with this run to be resumed: its params (but how often it logs, evaluates
    and saves), base model and training data."""
    data = sorted((str(p.relative_to(paths.TOKENIZED)), p.stat().st_size) for p in paths.TOKENIZED.rglob("*.arrow"))
    return {
        "train": params.train.model_dump(exclude=CADENCE),
        "tokenize": params.tokenize.model_dump(),
        "model": source(),
        "data": hashlib.sha1(json.dumps(data).encode()).hexdigest(),
    }


def complete_checkpoints() -> list[Path]:
    """Checkpoints whose saving finished (the trainer state is written last, and whole), oldest first: a pod
    stopped in the middle of a save leaves a partial directory, which is skipped."""
    found = [p for p in paths.CHECKPOINTS.glob("checkpoint-*") if trainer_state(p) is not None]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def trainer_state(checkpoint: Path) -> dict | None:
    """The checkpoint's trainer state; None while it is missing or torn (a stop in the middle of writing it)."""
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None


def finished(checkpoint: Path) -> bool:
    state = trainer_state(checkpoint)
    return state["global_step"] >= state["max_steps"] > 0


def resumable_checkpoint(params: Params) -> str | None:
    """The last checkpoint of an interrupted run of this same configuration, else None (and a clean slate).
    Every rank decides the same from the same files; only rank 0 deletes or writes."""
    current = fingerprint(params)
    if int(os.environ.get("RANK", 0)) != 0:
        try:
            same = json.loads(FINGERPRINT.read_text()) == current
        except FileNotFoundError:
            return None
        checkpoints = complete_checkpoints() if same else []
        return str(checkpoints[-1]) if checkpoints and not finished(checkpoints[-1]) else None
    if paths.CHECKPOINTS.is_dir():
        previous = json.loads(FINGERPRINT.read_text()) if FINGERPRINT.exists() else None
        checkpoints = complete_checkpoints() if previous == current else []
        if checkpoints and not finished(checkpoints[-1]):
            log.info("resuming from %s", checkpoints[-1])
            return str(checkpoints[-1])
        if checkpoints:  # a run that ended: the trainer would take one step more; afresh is the same run again
            log.info("checkpoints in %s are of a finished run; starting afresh", paths.CHECKPOINTS)
            shutil.rmtree(paths.CHECKPOINTS)
        elif previous != current:
            log.info("checkpoints in %s belong to other params or data; starting afresh", paths.CHECKPOINTS)
            shutil.rmtree(paths.CHECKPOINTS)
    paths.CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    FINGERPRINT.write_text(json.dumps(current, indent=2, sort_keys=True))
    return None


def load_model(params: Params, cuda: bool):
    if not cuda:
        log.info("no CUDA device: plain LoRA in fp32 (bitsandbytes 4-bit and bf16 training need a GPU)")
        model = load_base()
    else:
        from peft import prepare_model_for_kbit_training

        free, _total = torch.cuda.mem_get_info()
        check_gpu_memory(four_bit_footprint(), free, torch.cuda.get_device_name())
        # upcasts norms and the embedding to fp32 for stable training (TRL's trainer does not call it)
        model = prepare_model_for_kbit_training(
            load_base(), use_gradient_checkpointing=params.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if params.train.bf16_cast:
            cast_to_bf16(model)
    if params.train.attention == "varlen":
        model.set_attn_implementation(register_varlen_attention())
    return model


def check_targets(model, modules: list[str]) -> None:
    """Every `train.lora_target_modules` name is a layer of the model's language part (PEFT would otherwise
    stop with a traceback after the model has loaded, or, for some names, train nothing)."""
    pattern = re.compile(lora_target_regex(modules))
    found = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if pattern.match(name)}
    missing = [module for module in modules if module not in found]
    if missing:
        raise PipelineError(f"train.lora_target_modules: no module named {', '.join(map(repr, missing))} in the "
                            f"language model of {model.config.model_type!r}")


def cast_to_bf16(model) -> None:
    """Embedding and norms back to bf16 after prepare_model_for_kbit_training upcast them to fp32: the tied
    embedding of Gemma 3 27B is 1.4B parameters, and in fp32 it cost ~20 % speed and ~5 GiB (bench/README.md,
    where the loss with and without the cast is compared). They are frozen; LoRA's own weights stay fp32."""
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) or "RMSNorm" in type(module).__name__:
            module.to(torch.bfloat16)


def checkpoint_bytes(model) -> int:
    """One checkpoint: the trainable (LoRA) weights in fp32 and Adam's two moments for each."""
    return 12 * sum(p.numel() for p in model.parameters() if p.requires_grad)


def with_token_type_ids(collator):
    def collate(examples):
        batch = collator(examples)
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    return collate


def run(params: Params) -> dict:
    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    train = params.train
    if train.float8_products and torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 9):
        raise PipelineError(f"train.float8_products: {torch.cuda.get_device_name()} has no float8 tensor cores "
                            "(Ada, Hopper or Blackwell needed); set it to false")
    if not (paths.TOKENIZED / "train").is_dir():
        raise PipelineError(f"{paths.TOKENIZED / 'train'}: missing; run the tokenize stage first")
    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer()
    # Otherwise TRL's dataset preparation writes cache files into data/tokenized, a DVC output of tokenize.
    datasets.disable_caching()
    train_rows = datasets.load_from_disk(str(paths.TOKENIZED / "train"))
    validation_rows = datasets.load_from_disk(str(paths.TOKENIZED / "validation"))
    packed = "seq_lengths" in train_rows.column_names
    checkpoint = resumable_checkpoint(params)
    model = load_model(params, cuda)
    check_targets(model, train.lora_target_modules)
    # No KV cache in training; with packed rows it must be off for SDPA to mask by position ids.
    model.config.use_cache = False
    lora = LoraConfig(
        r=train.lora_r,
        lora_alpha=train.lora_alpha,
        lora_dropout=train.lora_dropout,
        target_modules=lora_target_regex(train.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    config = SFTConfig(
        output_dir=str(paths.CHECKPOINTS),
        num_train_epochs=train.num_train_epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.per_device_train_batch_size,
        per_device_eval_batch_size=train.per_device_train_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler_type,
        warmup_steps=train.warmup_steps,
        gradient_checkpointing=train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        use_liger_kernel=train.liger and cuda,  # Triton kernels: CUDA only
        activation_offloading=train.activation_offloading and cuda,
        # Packed rows (tokenize.packing) carry seq_lengths; TRL turns them into per-document position ids,
        # which keep documents from attending to each other. Rows are already at most max_seq_length.
        max_length=None if packed else params.tokenize.max_seq_length,
        padding_free=packed,
        packing=False,
        bf16=cuda,  # never fp16: Gemma 3/4 overflow in it
        use_cpu=not cuda,
        eval_strategy="steps",
        eval_steps=train.eval_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=2,
        logging_steps=train.logging_steps,
        report_to="none",  # dvclive is attached below, with its directory and resume flag
        include_num_input_tokens_seen="non_padding",  # in the trainer state: counted across resumes
        restore_callback_states_from_checkpoint=True,  # RunClock's time so far
        seed=train.seed,
        data_seed=train.seed,
        dataloader_num_workers=0,
    )
    callbacks = [RunClock()]
    if int(os.environ.get("RANK", 0)) == 0:
        callbacks += live_callbacks(resume=checkpoint is not None)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_rows,
        eval_dataset=validation_rows,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    if needs_token_type_ids(model):
        trainer.data_collator = with_token_type_ids(trainer.data_collator)
    if train.fused_lora:  # the CPU path has no 4-bit layers, so nothing there is fused
        # keeping each dequantised weight for the backward saves a dequantisation; under checkpointing only the
        # layer being recomputed holds its weight, without it every layer would
        fused = fuse(trainer.model, keep_weight=train.gradient_checkpointing, float8=train.float8_products)
        if fused:
            log.info("%d LoRA projections on 4-bit weights fused%s", fused,
                     ", float8 products" * train.float8_products)
    require_free(paths.CHECKPOINTS, checkpoint_bytes(trainer.model) * (config.save_total_limit + 1), "train (checkpoints)")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train(resume_from_checkpoint=checkpoint)
    report = summary(trainer, cuda)
    if trainer.is_world_process_zero():
        with atomic_dir(paths.ADAPTER) as out:
            trainer.model.save_pretrained(out)
            tokenizer.save_pretrained(out)
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, LiveCallback):
                callback.live.end()
        write_json(paths.TRAIN_REPORT, report)
        write_json(paths.metrics("train"), {key: report[key] for key in METRICS})
    log.info("train: %s", {key: report[key] for key in METRICS})
    return report


METRICS = ("train_loss", "eval_loss", "tokens_per_second_per_device", "peak_gpu_memory_gib", "gpu_hours")


def summary(trainer, cuda: bool) -> dict:
    """The whole run, across resumes (the trainer state and RunClock carry it through checkpoints): steps,
    real (non-padding) tokens, time, GPU-hours, mean logged training loss, last held-out loss, peak memory."""
    state, world = trainer.state, trainer.args.world_size
    clock = next(c for c in trainer.callback_handler.callbacks if isinstance(c, RunClock))
    seconds = clock.seconds()
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    evaluations = [entry["eval_loss"] for entry in state.log_history if "eval_loss" in entry]
    tokens = int(state.num_input_tokens_seen)
    return {
        "global_step": state.global_step,
        "train_loss": round(sum(losses) / len(losses), 5) if losses else None,
        "eval_loss": round(evaluations[-1], 5) if evaluations else None,
        "runtime_s": round(seconds, 1),
        "tokens": tokens,
        "tokens_per_second_per_device": round(tokens / seconds / world, 1) if seconds else None,
        "devices": world,
        "gpu_hours": round(seconds * world / 3600, 4) if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "base_model": source(),
        "provenance": environment(),
    }


def launched() -> bool:
    """Whether this process is one of those `accelerate launch` started."""
    return "LOCAL_RANK" in os.environ


def needs_launcher(params: Params) -> bool:
    path = params.train.accelerate_config
    try:
        config = yaml.safe_load(open(path, encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"train.accelerate_config: cannot read {path}: {str(exc).splitlines()[0]}") from None
    return params.train.num_processes > 1 or config.get("distributed_type", "NO") != "NO"


def relaunch(params: Params) -> None:
    """This stage again under `accelerate launch`, one process per GPU; its exit code becomes this one's. Each
    process reports its own errors in one line; the launcher's restatement of them (a CalledProcessError or
    torch's ChildFailedError, with tracebacks) is left out."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file",
               params.train.accelerate_config, "--num_processes", str(params.train.num_processes),
               "-m", "stages.train", *sys.argv[1:]]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")
    held: list[str] = []  # a traceback, until it shows whose it is
    for line in process.stderr:
        if held or line.startswith("Traceback (most recent call last)"):
            held.append(line)
            if not line.startswith((" ", "Traceback")):  # the exception line ends the traceback
                if "ChildFailedError" not in line and "CalledProcessError" not in line:
                    sys.stderr.writelines(held)
                held = []
        elif not line.startswith(("=====", "-----")) and "torch.distributed.elastic" not in line:
            sys.stderr.write(line)
    code = process.wait()
    if code:
        sys.exit(code if code in (130, 143) else 1)


def main() -> None:
    from pipeline.params import load
    from pipeline.stage import main as stage_main, params_path

    if not launched():
        try:
            params = load(params_path())
            launcher = needs_launcher(params)
        except PipelineError as exc:
            sys.exit(f"error: {exc}")
        if launcher:
            relaunch(params)
            return
    stage_main(run, __doc__)




if __name__ == "__main__":
    main()
