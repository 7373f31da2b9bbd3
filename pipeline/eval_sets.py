"""What the evaluate stage scores, found before training so the filter can protect it: the local evaluation
files (`evaluate.turkish_general_file`, `evaluate.english_file`, `filter.decontamination_files`) and the data
files of the local lm-eval tasks that are run; and the check that every lm-eval task name exists.

Hub benchmarks have no local file: export their texts to filter.decontamination_files to protect them.
"""
from __future__ import annotations

import csv
import difflib
import json
import os
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.errors import PipelineError
from pipeline.params import Params

BENCHMARK_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet", ".csv")


def strings(value) -> Iterable[str]:
    """Every string inside a benchmark row (question, choices, passage...), whatever its schema."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def benchmark_texts(path: Path, param: str = "filter.decontamination_files") -> Iterable[str]:
    if not path.is_file():
        raise PipelineError(f"{param}: no such file {path}")
    try:
        if path.suffix == ".txt":
            yield from path.read_text(encoding="utf-8").splitlines()
        elif path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches():
                for row in batch.to_pylist():
                    yield from strings(row)
        elif path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    try:
                        row = json.loads(line) if line.strip() else None
                    except json.JSONDecodeError as exc:
                        raise PipelineError(
                            f"{path}:{number}: malformed JSON ({exc.msg}) in an evaluation file") from None
                    yield from strings(row)
        elif path.suffix == ".json":
            yield from strings(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.reader(handle):
                    yield from row
        else:
            raise PipelineError(f"{param}: {path} is not {'/'.join(BENCHMARK_SUFFIXES)}")
    except (UnicodeDecodeError, json.JSONDecodeError, pa.ArrowException) as exc:
        raise PipelineError(f"{path}: unreadable evaluation file: {exc}") from None


class _TaskLoader(yaml.SafeLoader):
    """lm-eval task YAMLs may hold `!function module.name` tags, which only lm-eval can resolve."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def lm_eval_task_files(include_path: str | None, tasks: list[str]) -> list[Path]:
    """The local data files (`dataset_kwargs.data_files`) of the tasks in `include_path`'s YAMLs that are run.
    Hub tasks have none: export their texts to filter.decontamination_files to protect them."""
    if not include_path or not Path(include_path).is_dir():
        return []
    found = []
    for config_file in sorted(Path(include_path).rglob("*.yaml")):
        try:
            config = yaml.load(config_file.read_text(encoding="utf-8"), Loader=_TaskLoader) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            reason = str(exc).strip().splitlines()[0]
            raise PipelineError(f"{config_file}: not a readable lm-eval task YAML ({reason})") from None
        if not isinstance(config, dict) or config.get("task") not in tasks:
            continue
        # a name, a list of names, or a dict of split -> name(s): every string in it
        for name in strings((config.get("dataset_kwargs") or {}).get("data_files")):
            if Path(name).suffix in BENCHMARK_SUFFIXES and Path(name).is_file():
                found.append(Path(name))
    return found


def evaluation_files(params: Params) -> list[tuple[Path, str]]:
    """Each local file the evaluate stage scores on, with the param that names it."""
    settings = params.evaluate
    files = [(Path(path), "filter.decontamination_files") for path in params.filter.decontamination_files]
    for param in ("turkish_general_file", "english_file"):
        files.append((Path(getattr(settings, param)), f"evaluate.{param}"))
    files += [(path, "evaluate.lm_eval_tasks") for path in
              lm_eval_task_files(settings.lm_eval_include_path, settings.lm_eval_tasks)]
    for path, param in files:
        if not path.is_file():
            raise PipelineError(f"{param}: no such file {path}")
    return list(dict.fromkeys(files))


def _harness_tasks() -> set[str]:
    """Every task, group and tag name of the installed lm-evaluation-harness. Indexing its ~15,000 task YAMLs
    takes 15-40 s, so the names are kept per harness version in the user's cache."""
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "gemma-tr" / \
        f"lm_eval_tasks-{version('lm-eval')}.json"
    if cache.is_file():
        return set(json.loads(cache.read_text()))
    from lm_eval.tasks import TaskManager

    names = TaskManager().all_tasks
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(sorted(names)))
    tmp.replace(cache)
    return set(names)


def check_lm_eval_tasks(settings) -> None:
    """Stop with one line when an `evaluate.lm_eval_tasks` name is neither the harness's nor a local task's: a
    misspelt task must stop the first stage, not be skipped after training."""
    if not settings.lm_eval_tasks:
        return
    from lm_eval.tasks import TaskManager

    local = set(TaskManager(include_path=settings.lm_eval_include_path, include_defaults=False).all_tasks) \
        if settings.lm_eval_include_path else set()
    known = local | _harness_tasks()
    for task in settings.lm_eval_tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=1) or [n for n in known if n.lower() == task.lower()]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PipelineError(f"evaluate.lm_eval_tasks: {task!r} is not an lm-eval task{hint}")
