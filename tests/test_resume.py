"""Killed with SIGKILL, a stage resumes (train from its last checkpoint, prepare from its last file read, filter
from its last completed shard) and ends where an uninterrupted run ends."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from stages import base_model, filter as filter_stage, plan, prepare, tokenize
from tests.test_data_stages import DEMO_SOURCES, params_raw, params_with, prepare_all, source
from tests.tiny import REPO

TRAIN = {"max_steps": 30, "save_steps": 3, "eval_steps": 1000, "logging_steps": 1, "learning_rate": 1e-2,
         "per_device_train_batch_size": 2, "gradient_checkpointing": False}


@pytest.fixture
def tokenized(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    overlay = {"model": {"id": str(tiny_model_dir), "gguf_package": None}, "data": {"sources": DEMO_SOURCES},
               "filter": {"validation_fraction": 0.15}, "tokenize": {"max_seq_length": 128}, "train": TRAIN}
    params = params_with(overlay)
    base_model.run(params)
    prepare_all(params)
    for stage in (filter_stage, tokenize):
        stage.run(params)
    write_params(overlay)
    return tmp_path


def write_params(overlay: dict) -> None:
    """./params.yaml with the overlay laid over the defaults: what a stage's command line reads."""
    Path("params.yaml").write_text(yaml.safe_dump(params_raw(overlay), allow_unicode=True, sort_keys=False))


def stage_process(name: str, *arguments: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", f"stages.{name}", *arguments], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def finish(name: str, *arguments: str) -> str:
    process = stage_process(name, *arguments)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "gone"


def kill_when(process: subprocess.Popen, ready) -> None:
    deadline = time.time() + 300
    while not ready():
        assert process.poll() is None, "the stage ended before it could be killed:\n" + process.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def adapter() -> dict:
    return load_file("models/adapter/adapter_model.safetensors")


def test_sigkill_mid_training_resumes_and_matches_an_uninterrupted_run(tokenized):
    finish("train")
    reference = adapter()
    shutil.rmtree("models/checkpoints")
    shutil.rmtree("models/adapter")

    kill_when(stage_process("train"), Path("models/checkpoints/checkpoint-9/trainer_state.json").exists)
    assert not Path("models/adapter").exists()  # the killed run left no adapter behind
    done = sorted(int(p.name.split("-")[1]) for p in Path("models/checkpoints").glob("checkpoint-*"))
    assert 9 <= done[-1] < 30

    output = finish("train")
    assert "resuming from models/checkpoints/checkpoint-" in output
    resumed = adapter()
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-5), name

    # the same run once more (DVC reruns it when its adapter is gone): the same steps, not one more
    assert "are of a finished run; starting afresh" in finish("train")
    max_steps = yaml.safe_load(Path("params.yaml").read_text())["train"]["max_steps"]
    assert json.loads(Path("reports/train.json").read_text())["global_step"] == max_steps
    again = adapter()
    for name, tensor in reference.items():
        assert torch.allclose(again[name], tensor, atol=1e-5), name


def test_checkpoints_of_other_params_are_not_resumed(tokenized):
    finish("train")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"]["lora_r"] = 4
    Path("params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    output = finish("train")
    assert "belong to other params or data; starting afresh" in output
    assert "resuming" not in output


def test_a_resumed_run_reports_the_whole_run_and_cadence_changes_keep_the_checkpoints(tokenized):
    finish("train")
    whole = json.loads(Path("reports/train.json").read_text())
    shutil.rmtree("models/checkpoints")
    shutil.rmtree("models/adapter")
    kill_when(stage_process("train"), Path("models/checkpoints/checkpoint-15/trainer_state.json").exists)
    # the run's clock travels in each checkpoint: set it 10,000 s ahead, and the report must carry that time on
    # (a resumed run that counted only its own part would report seconds)
    for state_file in Path("models/checkpoints").glob("checkpoint-*/trainer_state.json"):
        state = json.loads(state_file.read_text())
        state["stateful_callbacks"]["RunClock"]["attributes"]["seconds_before"] += 10_000
        state_file.write_text(json.dumps(state))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"].update(logging_steps=2, eval_steps=500)  # how often it logs and evaluates: not the result
    Path("params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    output = finish("train")
    assert "resuming from models/checkpoints/checkpoint-" in output
    resumed = json.loads(Path("reports/train.json").read_text())
    assert resumed["global_step"] == whole["global_step"] == 30
    assert resumed["tokens"] == whole["tokens"] > 0  # every step's tokens, not only the resumed part's
    assert resumed["runtime_s"] > 10_000
    metrics = json.loads(Path("reports/metrics/train.json").read_text())
    assert metrics["train_loss"] == resumed["train_loss"] and resumed["train_loss"] > 0


def snapshot(directory: str) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def stamps(paths) -> dict:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


@pytest.fixture
def many_shards(tmp_path, monkeypatch):
    """A web source of 3,000 generated pages (Turkish, Azerbaijani, English...) in 30 files, prepared into
    shards of 20 rows."""
    from bench.filter_throughput import corpus

    monkeypatch.chdir(tmp_path)
    Path("web").mkdir()
    for i, (label, text) in enumerate(corpus(3000, seed=1)):
        with open(f"web/{i // 100:03d}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"id": f"{label}-{i}", "text": text}, ensure_ascii=False) + "\n")
    write_params({"data": {"sources": {"web": source("web")}, "shard_rows": 20}, "filter": {"validation_fraction": 0.05}})
    finish("plan")
    return tmp_path


def test_sigkill_in_prepare_keeps_the_files_read_and_ends_as_an_uninterrupted_run(many_shards):
    finish("prepare", "web")
    reference = snapshot("data/prepared")
    shutil.rmtree("data/prepared")

    journal = Path("data/prepared/.web.partial/.journal")
    process = stage_process("prepare", "web")
    kill_when(process, lambda: len(list(journal.glob("unit-*.json"))) >= 10)
    units = sorted(int(p.stem.split("-")[1]) for p in journal.glob("unit-*.json"))
    assert not Path("data/prepared/web").exists()
    done = [p for p in Path("data/prepared/.web.partial").glob("part-*.parquet") if int(p.name[5:10]) in units]
    before = stamps(done)

    output = finish("prepare", "web")
    assert f"({len(units)} units done)" in output
    moved = {str(p).replace(".web.partial", "web"): stamp for p, stamp in before.items()}
    assert stamps(Path(p) for p in moved) == moved  # the files read before were not read again
    assert snapshot("data/prepared") == reference
    assert not Path("data/prepared/.web.partial").exists()


def test_sigkill_in_filter_keeps_completed_shards_and_ends_as_an_uninterrupted_run(many_shards):
    finish("prepare", "web")
    finish("filter")
    reference, report = snapshot("data/filtered"), Path("reports/filter.json").read_text()
    shutil.rmtree("data/filtered")

    state = Path("data/.filtered.partial/.journal")
    process = stage_process("filter")
    workers: list[int] = []

    def ready() -> bool:
        workers[:] = children(process.pid)
        return len(list(state.glob("unit-*.json"))) >= 10 and bool(workers)

    kill_when(process, ready)
    process.stdout.close()
    deadline = time.time() + 10  # its workers see the stage gone and end: no orphans left on the pod
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in status(pid) for pid in workers):
        assert time.time() < deadline, f"workers {workers} outlived the killed stage"
        time.sleep(0.1)
    done = sorted(int(p.stem.split("-")[1]) for p in state.glob("unit-*.json"))
    assert done == list(range(len(done))) and len(done) < 150
    outputs = [p for p in Path("data/.filtered.partial").glob("*/part-*.parquet") if int(p.name[5:10]) in done]
    assert outputs
    before = stamps(outputs)

    finish("filter")
    moved = {str(p).replace(".filtered.partial", "filtered"): stamp for p, stamp in before.items()}
    assert stamps(Path(p) for p in moved) == moved  # completed shards were not redone
    assert snapshot("data/filtered") == reference  # nor was anything lost or kept twice
    assert Path("reports/filter.json").read_text() == report


def test_a_disk_too_small_for_the_outputs_stops_before_writing(many_shards, full_disk):
    from pipeline.errors import PipelineError
    from pipeline.params import load

    with pytest.raises(PipelineError, match=r"data.sources.web.dataset \(local files\): needs about 1.0 GiB free "
                                            r"on .*, 0.0 GiB"):
        prepare.run(load("params.yaml"), "web")
    assert not Path("data/prepared").exists()


def test_filter_stopped_between_a_shards_marker_and_its_index_update_ends_as_an_uninterrupted_run(
        many_shards, monkeypatch):
    """The narrowest window: a shard's done marker is written, its rows not yet in the dedup index. The next run
    must apply that shard's journal, or its rows could come back as duplicates' survivors later."""
    from pipeline.dedup import Deduplicator
    from pipeline.params import load

    rows = [row for path in sorted(Path("web").glob("*.jsonl")) for row in path.read_text(encoding="utf-8").splitlines()]
    copies = [json.dumps(dict(json.loads(row), id=f"copy-{i}"), ensure_ascii=False) for i, row in enumerate(rows[:300])]
    Path("web/999.jsonl").write_text("\n".join(copies) + "\n", encoding="utf-8")  # the first rows come back
    params = load("params.yaml")
    prepare.run(params, "web")
    filter_stage.run(params)
    reference, report = snapshot("data/filtered"), Path("reports/filter.json").read_text()
    assert json.loads(report)["sources"]["web"]["dropped"]["exact_duplicate"] >= 150  # the copies were found
    shutil.rmtree("data/filtered")

    apply, calls = Deduplicator.apply, []

    def stop_at_the_fifth(self, journal):
        calls.append(journal)
        if len(calls) == 5:
            raise KeyboardInterrupt  # as a kill would, after the marker and before the index update
        apply(self, journal)

    monkeypatch.setattr(Deduplicator, "apply", stop_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        filter_stage.run(params)
    marker = Path("data/.filtered.partial/.journal/unit-00004.json")
    assert json.loads(marker.read_text())["applied"] is False
    monkeypatch.setattr(Deduplicator, "apply", apply)

    filter_stage.run(params)
    assert snapshot("data/filtered") == reference
    assert Path("reports/filter.json").read_text() == report
