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

from pipeline.errors import PipelineError
from pipeline.models import load_causal_lm, load_tokenizer, source
from pipeline.outputs import atomic_dir
from pipeline.params import Params

DATA = Path("data/tokenized")
ADAPTER = Path("models/adapter")
CHECKPOINTS = Path("models/checkpoints")
LIVE = Path("reports/train")
FINGERPRINT = CHECKPOINTS / "fingerprint.json"
log = logging.getLogger("train")


class LiveCallback(DVCLiveCallback):
    """transformers' DVCLiveCallback counts its own steps (one per log call); plots need the optimizer step."""

    def on_log(self, args, state, control, **kwargs):
        self.live.step = state.global_step
        super().on_log(args, state, control, **kwargs)


def fingerprint(params: Params) -> dict:
    """What a checkpoint must share with this run to be resumed: its params, base model and training data."""
    data = sorted((str(p.relative_to(DATA)), p.stat().st_size) for p in DATA.rglob("*.arrow"))
    return {
        "train": params.train.model_dump(),
        "tokenize": params.tokenize.model_dump(),
        "model": source(),
        "data": hashlib.sha1(json.dumps(data).encode()).hexdigest(),
    }


def resumable_checkpoint(params: Params) -> str | None:
    """The last checkpoint of an interrupted run of this same configuration, else None (and a clean slate)."""
    from transformers.trainer_utils import get_last_checkpoint

    current = fingerprint(params)
    if CHECKPOINTS.is_dir():
        previous = json.loads(FINGERPRINT.read_text()) if FINGERPRINT.exists() else None
        if previous == current:
            last = get_last_checkpoint(str(CHECKPOINTS))
            if last:
                log.info("resuming from %s", last)
                return last
        else:
            log.info("checkpoints in %s belong to other params or data; starting afresh", CHECKPOINTS)
            shutil.rmtree(CHECKPOINTS)
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    FINGERPRINT.write_text(json.dumps(current, indent=2, sort_keys=True))
    return None


def load_model(params: Params, cuda: bool):
    if not cuda:
        log.info("no CUDA device: plain LoRA in fp32 (bitsandbytes 4-bit and bf16 training need a GPU)")
        return load_causal_lm()
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    # One full copy of the 4-bit model per process; never device_map="auto" (it breaks DeepSpeed and DDP).
    device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = load_causal_lm(dtype=torch.bfloat16, quantization_config=quantization, device_map=device_map)
    # TRL 1.16 no longer does this itself.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.train.gradient_checkpointing)


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
    checkpoint = resumable_checkpoint(params)
    model = load_model(params, cuda)
    lora = LoraConfig(
        r=train.lora_r,
        lora_alpha=train.lora_alpha,
        lora_dropout=train.lora_dropout,
        target_modules=train.lora_target_modules,
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
        max_length=params.tokenize.max_seq_length,
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
        from dvclive import Live

        live = Live(str(LIVE), resume=checkpoint is not None, save_dvc_exp=False, dvcyaml=False)
        callbacks.append(LiveCallback(live))
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_rows,
        eval_dataset=validation_rows,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.is_world_process_zero():
        with atomic_dir(ADAPTER) as out:
            trainer.model.save_pretrained(out)
            tokenizer.save_pretrained(out)
        for callback in callbacks:
            callback.live.end()
    log.info("trained %d steps, final train loss %.4f", result.global_step, result.training_loss)
    return {"global_step": result.global_step, "train_loss": result.training_loss}


if __name__ == "__main__":
    from pipeline.stage import main

    main(run, __doc__)
