"""Killed with SIGKILL, a stage resumes (train from its last checkpoint, prepare and filter from their last
completed shard) and ends where an uninterrupted run ends."""
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

from pipeline.experiment import merged
from stages import base_model, filter as filter_stage, prepare, tokenize
from tests.test_data_stages import DEMO_SOURCES, params_with
from tests.tiny import REPO

TRAIN = {"max_steps": 30, "save_steps": 3, "eval_steps": 1000, "logging_steps": 1, "learning_rate": 1e-2,
         "per_device_train_batch_size": 2, "gradient_checkpointing": False}


@pytest.fixture
def tokenized(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    overlay = {"model": {"id": str(tiny_model_dir), "gguf_package": None}, "data": {"sources": DEMO_SOURCES},
               "filter": {"validation_fraction": 0.15}, "tokenize": {"max_seq_length": 128}, "train": TRAIN}
    params = params_with(overlay)
    for stage in (base_model, prepare, filter_stage, tokenize):
        stage.run(params)
    # the stage's command line reads ./params.yaml, as under dvc repro
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged(defaults, overlay), allow_unicode=True))
    return tmp_path


def stage_process(name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", f"stages.{name}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(name: str) -> str:
    process = stage_process(name)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


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


def test_checkpoints_of_other_params_are_not_resumed(tokenized):
    finish("train")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"]["lora_r"] = 4
    Path("params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    output = finish("train")
    assert "belong to other params or data; starting afresh" in output
    assert "resuming" not in output


def snapshot(directory: str) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def stamps(paths) -> dict:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


@pytest.fixture
def many_shards(tmp_path, monkeypatch):
    """A web source of 3,000 generated pages (Turkish, Azerbaijani, English...) cut into shards of 20 rows."""
    from bench.filter_throughput import corpus

    monkeypatch.chdir(tmp_path)
    with open("web.jsonl", "w", encoding="utf-8") as handle:
        for i, (label, text) in enumerate(corpus(3000, seed=1)):
            handle.write(json.dumps({"id": f"{label}-{i}", "text": text}, ensure_ascii=False) + "\n")
    overlay = {"data": {"sources": [{"name": "web", "path": "web.jsonl", "format": "text"}], "shard_rows": 20},
               "filter": {"validation_fraction": 0.05}}
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    Path("params.yaml").write_text(yaml.safe_dump(merged(defaults, overlay), allow_unicode=True))
    return tmp_path


def test_sigkill_in_prepare_keeps_completed_shards_and_ends_as_an_uninterrupted_run(many_shards):
    finish("prepare")
    reference = snapshot("data/prepared")
    shutil.rmtree("data/prepared")

    state = Path("data/.prepared.partial/.state/web.json")
    process = stage_process("prepare")
    kill_when(process, lambda: state.is_file() and json.loads(state.read_text())["shards"] >= 10)
    shards = json.loads(state.read_text())["shards"]
    assert not Path("data/prepared").exists()
    done = [Path(f"data/.prepared.partial/web/part-{i:05d}.parquet") for i in range(shards)]
    before = stamps(done)

    output = finish("prepare")
    assert f"resuming after {shards * 20} records in {shards} shards" in output
    assert stamps(Path(str(p).replace(".prepared.partial", "prepared")) for p in done) == {
        str(p).replace(".prepared.partial", "prepared"): stamp for p, stamp in before.items()}  # not redone
    assert snapshot("data/prepared") == reference
    assert not Path("data/.prepared.partial").exists()


def test_sigkill_in_filter_keeps_completed_shards_and_ends_as_an_uninterrupted_run(many_shards):
    finish("prepare")
    finish("filter")
    reference, report = snapshot("data/filtered"), Path("reports/filter.json").read_text()
    shutil.rmtree("data/filtered")

    state = Path("data/.filtered.partial/.state")
    process = stage_process("filter")
    kill_when(process, lambda: len(list(state.glob("done-*.json"))) >= 10)
    done = sorted(int(p.stem.split("-")[1]) for p in state.glob("done-*.json"))
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

    with pytest.raises(PipelineError, match=r"data.sources \(local files\): needs about 1.0 GiB free on .*, 0.0 GiB"):
        prepare.run(load("params.yaml"))
    assert not Path("data").exists()


def test_filter_stopped_between_a_shards_marker_and_its_index_update_ends_as_an_uninterrupted_run(
        many_shards, monkeypatch):
    """The narrowest window: a shard's done marker is written, its rows not yet in the dedup index. The next run
    must apply that shard's journal, or its rows could come back as duplicates' survivors later."""
    from pipeline.dedup import Deduplicator
    from pipeline.params import load

    rows = Path("web.jsonl").read_text(encoding="utf-8").splitlines()
    copies = [json.dumps(dict(json.loads(row), id=f"copy-{i}"), ensure_ascii=False) for i, row in enumerate(rows[:300])]
    Path("web.jsonl").write_text("\n".join(rows + copies) + "\n", encoding="utf-8")  # shard 4's rows come back
    params = load("params.yaml")
    prepare.run(params)
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
    marker = Path("data/.filtered.partial/.state/done-00004.json")
    assert json.loads(marker.read_text())["applied"] is False
    monkeypatch.setattr(Deduplicator, "apply", apply)

    filter_stage.run(params)
    assert snapshot("data/filtered") == reference
    assert Path("reports/filter.json").read_text() == report


def test_a_hub_source_streams_the_commit_its_report_records(tmp_path, monkeypatch):
    import datasets

    from stages import prepare as prepare_stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prepare_stage, "hub_dataset_revision", lambda path, revision: "0123abcd")
    streamed = []

    def load_dataset(path, name=None, split=None, revision=None, streaming=False, token=None):
        streamed.append(revision)
        return datasets.IterableDataset.from_generator(
            lambda: iter([{"inputs": "Başkent neresi?", "targets": "Ankara.", "language_code": "tur"}]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    aya = {"name": "aya", "path": "CohereLabs/aya_dataset", "format": "aya", "split": "train"}  # no revision
    report = prepare_stage.run(params_with({"data": {"sources": [aya]}}))
    assert streamed == ["0123abcd"] and report["sources"]["aya"]["revision"] == "0123abcd"


def test_a_broken_hub_stream_resumes_where_it_stopped(tmp_path, monkeypatch):
    """A Hub source through datasets' own streaming IterableDataset; only load_dataset is replaced, since
    nothing here reaches the Hub. The pinned config, split and revision and $HF_TOKEN reach it; a stream that
    breaks keeps the shards written so far, the next run skips the rows they hold and ends as an unbroken run
    does, and the token is written nowhere."""
    import datasets

    from pipeline.errors import RetryableError

    monkeypatch.chdir(tmp_path)
    token = "hf_test_token_never_written"
    monkeypatch.setenv("HF_TOKEN", token)
    rows = [{"inputs": f"Soru {i}: Ankara'da gezilecek yerler nereler?", "targets": f"Cevap {i}: Anıtkabir ve Kale.",
             "language": "Turkish" if i % 4 else "English", "language_code": "tur" if i % 4 else "eng",
             "annotation_type": "original-annotations", "user_id": f"u{i}"} for i in range(130)]
    broken_at: list[int | None] = [70]
    calls = []

    def stream():
        for i, row in enumerate(rows):
            if i == broken_at[0]:
                raise ConnectionError("Read timed out")
            yield row

    def load_dataset(path, name=None, split=None, revision=None, streaming=False, token=None):
        calls.append((path, name, split, revision, streaming, token))
        return datasets.IterableDataset.from_generator(stream)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    aya = {"name": "aya", "path": "CohereForAI/aya_dataset", "format": "aya", "config": "default",
           "split": "train", "revision": "abc123"}
    params = params_with({"data": {"sources": [aya], "shard_rows": 20}})

    with pytest.raises(RetryableError, match="the Hub stream of 'CohereForAI/aya_dataset' broke near row"):
        prepare.run(params)
    state = json.loads(Path("data/.prepared.partial/.state/aya.json").read_text())
    assert state["shards"] == 2 and state["records"] == 54  # 40 Turkish rows of the first 54 in two shards
    broken_at[0] = None
    prepare.run(params)
    resumed, resumed_report = snapshot("data/prepared"), Path("reports/prepare.json").read_text()
    assert calls == [("CohereForAI/aya_dataset", "default", "train", "abc123", True, token)] * 2

    shutil.rmtree("data")
    prepare.run(params)
    assert snapshot("data/prepared") == resumed
    assert Path("reports/prepare.json").read_text() == resumed_report
    report = json.loads(resumed_report)["sources"]["aya"]
    assert report["read"] == 130 and report["kept"] == 97 and report["skipped"] == {"source_language": 33}
    assert not any(token.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
