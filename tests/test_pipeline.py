"""The whole pipeline through DVC in a copy of the repository: the demo's overlay on a tiny Gemma."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import tiny_overlay

BIN = str(Path(sys.executable).parent)


def sh(*command, check=True, cwd=None, env=None):
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture
def overlay(project, tiny_model_dir):
    return tiny_overlay(project, tiny_model_dir)


def test_demo_pipeline_end_to_end_then_nothing_reruns(overlay):
    sh(sys.executable, "-m", "pipeline.experiment", str(overlay))

    evaluation = json.loads(Path("reports/eval.json").read_text())
    report = evaluation["validation"]["all"]
    assert report["tuned"]["perplexity"] < report["base"]["perplexity"], evaluation
    assert report["base"]["tokens"] == report["tuned"]["tokens"] > 0
    assert report["delta"]["bits_per_byte"] < 0
    assert {"kind:text", "kind:chat", "source:web", "source:wikipedia", "source:openhermes"} <= set(
        evaluation["validation"])
    assert evaluation["english"]["base"]["tokens"] > 0 and "delta" in evaluation["english"]
    assert set(evaluation["fertility_tokens_per_word"]) == {"web", "wikipedia", "openhermes"}
    assert evaluation["generation"]["prompts"] == 2
    assert 0 <= evaluation["generation"]["tuned"]["turkish_answer_rate"] <= 1
    assert "demo_tr_regions/acc" in evaluation["lm_eval"]["demo_tr_regions"]["tuned"]  # ran through lm-eval
    assert "belebele_tur_Latn" in evaluation["lm_eval_skipped"]  # needs the Hub, which tests cannot reach
    assert Path("reports/samples.md").read_text().count("\n| ") == 3  # header + 2 prompts
    assert Path("models/adapter/adapter_config.json").exists()
    assert list(Path("data/filtered/train").glob("part-*.parquet"))
    filtered = json.loads(Path("reports/filter.json").read_text())["sources"]
    assert filtered["web"]["dropped"]["language"] >= 6  # the English and Azerbaijani posts
    assert filtered["openhermes"]["dropped"]["language"] >= 3  # English chats and the English answer
    metrics = json.loads(Path("reports/train/metrics.json").read_text())
    assert metrics["step"] == 6  # the optimizer step, not dvclive's count of log calls

    again = sh("dvc", "repro")
    assert "Running stage" not in again.stdout, again.stdout
    assert "up to date" in again.stdout
    assert Path("models/merged/README.md").exists()  # the export stage; export.merge is off in the demo

    # a stage that fails leaves nothing half-written, and DVC says what is stale; checkout restores the last good
    filtered = {p: p.read_bytes() for p in Path("data/filtered").rglob("*.parquet")}
    params = Path("params.yaml").read_text()
    Path("params.yaml").write_text(params.replace("validation_fraction: 0.15", "validation_fraction: 0.0001"))
    failed = sh("dvc", "repro", check=False)
    assert failed.returncode != 0 and "error: filter kept" in failed.stderr + failed.stdout
    assert not [p.name for p in Path("data").iterdir() if p.name.startswith(".")]  # no partial, no temporary
    stale = sh("dvc", "status").stdout
    assert "filter:" in stale and "modified:" in stale and "params.yaml" in stale, stale
    Path("params.yaml").write_text(params)
    sh("dvc", "checkout")
    assert {p: p.read_bytes() for p in Path("data/filtered").rglob("*.parquet")} == filtered
    assert "up to date" in sh("dvc", "status").stdout

    # the training curves render offline: vega inlined, nothing fetched from a CDN
    sh(sys.executable, "-m", "pipeline.plots")
    page = Path("dvc_plots/index.html").read_text()
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    assert "vegaEmbed(" in page and "reports/train/plots/metrics/eval/loss.tsv" in page, page[-3000:]
    assert "#reports_eval_plot_json" in page and "bits_per_byte" in page  # the evaluation plot too


def test_dag_is_prepare_filter_tokenize_train_evaluate(project):
    edges = sh("dvc", "dag", "--dot").stdout
    for upstream, downstream in [("prepare", "filter"), ("filter", "tokenize"), ("tokenize", "train"),
                                 ("train", "evaluate"), ("base_model", "tokenize")]:
        assert f'"{upstream}" -> "{downstream}"' in edges, edges


def test_a_typo_in_the_overlay_stops_before_dvc_runs(project):
    bad = project / "bad.yaml"
    bad.write_text("train:\n  lora_rank: 8\n")
    result = sh(sys.executable, "-m", "pipeline.experiment", str(bad), check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: params.yaml + {bad}: train.lora_rank: unknown key"
    assert not Path("data").exists()
