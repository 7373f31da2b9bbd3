"""prepare@<source>: the plan's sample of a source, spread over the whole of it and the same in every run; Hub
files downloaded at the pinned commit, only those the sample needs; local folders laid out as on the Hub."""
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.hub_layout import write_fineweb2, write_wikipedia
from pipeline.errors import PipelineError
from stages import plan, prepare
from tests.test_data_stages import params_with
from tests.test_filter import TURKISH


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fineweb2(tmp_path) -> Path:
    """20 files of 100 rows in row groups of 10, as HuggingFaceFW/fineweb-2 lays out tur_Latn."""
    directory = tmp_path / "fineweb-2"
    write_fineweb2(directory, (f"{TURKISH} Belge {i}." for i in range(2000)), rows_per_file=100, rows_per_group=10)
    return directory


def fineweb2_source(path, **figures) -> dict:
    return {"dataset": {"path": str(path), "config": "tur_Latn", "format": "text"}, "tokens_per_row": 100,
            "survival": 1.0, **figures}


def run(params, name="web") -> dict:
    plan.run(params)
    return prepare.run(params, name)


def prepared_ids(name="web") -> list[str]:
    return [row["id"] for shard in sorted(Path(f"data/prepared/{name}").glob("*.parquet"))
            for row in pq.read_table(shard, columns=["id"]).to_pylist()]


def test_a_sample_spreads_over_the_files_of_a_hub_layout_and_is_the_same_every_run(workdir, fineweb2):
    params = params_with({"data": {"sources": {"web": fineweb2_source(fineweb2, max_samples=200)},
                                   "sample_files": 8}})
    report = run(params)
    assert report["files"] == 20 and report["files_read"] >= 8  # spread over at least data.sample_files files
    assert 200 <= report["read"] < 200 + 10  # whole row groups of 10, until the planned rows are in
    ids = prepared_ids()
    files = {int(i.split("-")[-1].rstrip(">"), 16) // 100 for i in ids}  # each row's file, from its number
    assert len(files) == report["files_read"]
    snapshot = {p.name: p.read_bytes() for p in Path("data/prepared/web").iterdir()}
    shutil.rmtree("data")
    run(params)
    assert {p.name: p.read_bytes() for p in Path("data/prepared/web").iterdir()} == snapshot
    other = params_with({"data": {"sources": {"web": fineweb2_source(fineweb2, max_samples=200)},
                                  "sample_files": 8, "seed": 1}})
    run(other)
    assert prepared_ids() != ids


def test_a_whole_source_is_read_when_the_plan_asks_for_more_than_it_has(workdir, tmp_path):
    wikipedia = tmp_path / "wikipedia"
    write_wikipedia(wikipedia, [(f"Madde {i}", f"{TURKISH} {i}") for i in range(50)], files=2)
    params = params_with({"data": {"sources": {"wikipedia": {
        "dataset": {"path": str(wikipedia), "config": "20231101.tr", "format": "wikipedia"},
        "tokens_per_row": 100, "survival": 1.0}}}})
    report = run(params, "wikipedia")
    assert (report["read"], report["kept"], report["files_read"]) == (50, 50, 2)
    assert prepared_ids("wikipedia") == [str(i + 1) for i in range(50)]


def test_hub_files_are_downloaded_at_the_pinned_commit_and_only_those_the_sample_needs(workdir, fineweb2,
                                                                                        monkeypatch):
    import huggingface_hub

    from pipeline import sources
    from stages import prepare as prepare_stage

    files = sorted((fineweb2 / "data/tur_Latn/train").glob("*.parquet"))
    monkeypatch.setattr(prepare_stage, "hub_dataset_revision", lambda path, revision, param: "0123abcd")
    resolved = []

    def builder_files(path, dataset, revision, param):
        resolved.append((path, dataset.config, dataset.split, revision))
        return [f"hf://datasets/{path}@{revision}/data/tur_Latn/train/{f.name}" for f in files]

    downloads = []

    def hf_hub_download(repo_id, filename, repo_type, revision, local_dir, token):
        downloads.append((repo_id, filename, repo_type, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fineweb2 / filename, target)
        return str(target)

    monkeypatch.setattr(sources, "_builder_files", builder_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    hub = {"dataset": {"path": "HuggingFaceFW/fineweb-2", "config": "tur_Latn", "format": "text"},
           "tokens_per_row": 100, "survival": 1.0, "max_samples": 100}
    report = run(params_with({"data": {"sources": {"web": hub}, "sample_files": 4}}))
    assert resolved == [("HuggingFaceFW/fineweb-2", "tur_Latn", "train", "0123abcd")]
    assert report["revision"] == "0123abcd" and report["files_read"] >= 4
    assert {(repo, kind, revision) for repo, _, kind, revision in downloads} == {
        ("HuggingFaceFW/fineweb-2", "dataset", "0123abcd")}
    assert report["files_read"] <= len(downloads) < 20  # the sample's files and a few ahead, not the whole source
    assert not list(Path("data").rglob("*downloads*"))  # deleted once read


@pytest.mark.parametrize("path, message", [
    ("demo/data/webb", r"^data.sources.web.dataset: no .json/.jsonl/.parquet file at 'demo/data/webb'$"),
    ("nobody/nothing", r"^data.sources.web.dataset: cannot reach the Hub dataset 'nobody/nothing' .*HF_HUB_OFFLINE=1"),
])
def test_a_missing_local_path_is_named_as_one_and_an_unreachable_hub_dataset_as_that(workdir, path, message):
    params = params_with({"data": {"sources": {"web": {"dataset": {"path": path, "format": "text"},
                                                       "tokens_per_row": 100, "survival": 1.0}}}})
    plan.run(params)
    with pytest.raises(PipelineError, match=message):
        prepare.run(params, "web")
    assert not Path("data/prepared/web").exists()


def test_an_unknown_source_name_is_one_line(workdir):
    with pytest.raises(PipelineError, match="data.sources: no source named 'nope'"):
        prepare.run(params_with({}), "nope")


def test_the_plan_file_drives_how_much_is_read(workdir, fineweb2):
    params = params_with({"data": {"sources": {"web": fineweb2_source(fineweb2)}, "sample_files": 2}})
    plan.run(params)
    Path("data/plan/web.json").write_text(json.dumps({"rows_to_read": 30, "rows": None, "train_tokens": 1}))
    report = prepare.run(params, "web")
    assert 30 <= report["read"] <= 50 and report["rows_planned"] == 30
