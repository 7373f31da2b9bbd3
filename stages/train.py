"""train: LoRA on the base model with TRL's SFTTrainer; QLoRA (4-bit NF4) on CUDA, plain LoRA in fp32 on CPU.

Input: data/tokenized/, models/base/. Output: models/adapter/ (adapter + tokenizer), checkpoints in
models/checkpoints/ (kept across runs: a stopped run resumes from the last one) and dvclive logs in
reports/train/. Launch with `accelerate launch -m stages.train` for several GPUs (configs/accelerate/).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers.integrations import DVCLiveCallback

from pipeline.attention import register_varlen_attention
from pipeline.disk import require_free
from pipeline.errors import PipelineError
from pipeline.models import (
    check_gpu_memory,
    four_bit_footprint,
    load_base,
    load_tokenizer,
    lora_target_regex,
    needs_token_type_ids,
    source,
)
from pipeline.outputs import atomic_dir, write_json
from pipeline.params import Params
from pipeline.provenance import environment

DATA = Path("data/tokenized")
ADAPTER = Path("models/adapter")
CHECKPOINTS = Path("models/checkpoints")
LIVE = Path("reports/train")
REPORT = Path("reports/train.json")
FINGERPRINT = CHECKPOINTS / "fingerprint.json"
log = logging.getLogger("train")


class LiveCallback(DVCLiveCallback):
    """transformers' DVCLiveCallback counts its own steps (one per log call); plots need the optimizer step."""

    def on_log(self, args, state, control, **kwargs):
        self.live.step = state.global_step
        super().on_log(args, state, control, **kwargs)


def live_callbacks(resume: bool) -> list:
    try:
        from dvclive import Live
    except ImportError:  # e.g. a bare GPU box running the stage by hand; the project's image has dvclive
        log.warning("dvclive is not installed: no metrics or plots in %s", LIVE)
        return []
    return [LiveCallback(Live(str(LIVE), resume=resume, save_dvc_exp=False, dvcyaml=False))]


def fingerprint(params: Params) -> dict:
    """What a checkpoint must share with this run to be resumed: its params, base model and training data."""
    data = sorted((str(p.relative_to(DATA)), p.stat().st_size) for p in DATA.rglob("*.arrow"))
    return {
        "train": params.train.model_dump(),
        "tokenize": params.tokenize.model_dump(),
        "model": source(),
        "data": hashlib.sha1(json.dumps(data).encode()).hexdigest(),
    }


def complete_checkpoints() -> list[Path]:
    """Checkpoints whose saving finished (the trainer state is written last), oldest first: a pod stopped
    in the middle of a save leaves a partial directory, which is skipped."""
    found = [p for p in CHECKPOINTS.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


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
        return str(checkpoints[-1]) if checkpoints else None
    if CHECKPOINTS.is_dir():
        previous = json.loads(FINGERPRINT.read_text()) if FINGERPRINT.exists() else None
        if previous == current:
            checkpoints = complete_checkpoints()
            if checkpoints:
                log.info("resuming from %s", checkpoints[-1])
                return str(checkpoints[-1])
        else:
            log.info("checkpoints in %s belong to other params or data; starting afresh", CHECKPOINTS)
            shutil.rmtree(CHECKPOINTS)
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
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
        # TRL 1.16 no longer calls this itself; it upcasts norms and the embedding to fp32 for stable training.
        model = prepare_model_for_kbit_training(
            load_base(), use_gradient_checkpointing=params.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if params.train.bf16_cast:
            cast_to_bf16(model)
    if params.train.attention == "varlen":
        model.set_attn_implementation(register_varlen_attention())
    return model


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

    if not (DATA / "train").is_dir():
        raise PipelineError(f"{DATA / 'train'}: missing; run the tokenize stage first")
    train = params.train
    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer()
    # Otherwise TRL's dataset preparation writes cache files into data/tokenized, a DVC output of tokenize.
    datasets.disable_caching()
    train_rows = datasets.load_from_disk(str(DATA / "train"))
    validation_rows = datasets.load_from_disk(str(DATA / "validation"))
    packed = "seq_lengths" in train_rows.column_names
    checkpoint = resumable_checkpoint(params)
    model = load_model(params, cuda)
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
        output_dir=str(CHECKPOINTS),
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
        seed=train.seed,
        data_seed=train.seed,
        dataloader_num_workers=0,
    )
    callbacks = []
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
    require_free(CHECKPOINTS, checkpoint_bytes(trainer.model) * (config.save_total_limit + 1), "train (checkpoints)")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    report = summary(trainer, result, cuda)
    if trainer.is_world_process_zero():
        with atomic_dir(ADAPTER) as out:
            trainer.model.save_pretrained(out)
            tokenizer.save_pretrained(out)
        for callback in callbacks:
            callback.live.end()
        write_json(REPORT, report)
    log.info("train: %s", report)
    return report


def summary(trainer, result, cuda: bool) -> dict:
    """What the run cost: steps, real (non-padding) tokens per second and per GPU, peak GPU memory."""
    world = trainer.args.world_size
    tokens = next((entry["num_tokens"] for entry in reversed(trainer.state.log_history) if "num_tokens" in entry), 0)
    runtime = result.metrics.get("train_runtime", 0.0)
    return {
        "global_step": result.global_step,
        "train_loss": round(result.training_loss, 5),
        "runtime_s": round(runtime, 1),
        "tokens": int(tokens),
        "tokens_per_second_per_device": round(tokens / runtime / world, 1) if runtime else None,
        "devices": world,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "base_model": source(),
        "provenance": environment(),
    }


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
