"""The plan stage: the budget in GPU-hours buys the train tokens; sources share them by weight; every source is
bounded; offline, in seconds; a price changes no file that a data stage reads."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages import plan
from tests.test_data_stages import params_with
from tests.tiny import REPO


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_shipped_params_plan_a_bounded_run_within_the_budget_offline_in_seconds(workdir):
    (workdir / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "stages.plan"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    report = json.loads(Path("reports/plan.json").read_text())
    assert report["gpu_hours"] <= report["budget_gpu_hours"] == 20
    assert 10 <= report["budget_gpu_hours"] <= 30 and report["gpus"] == 1
    assert report["usd"] == pytest.approx(report["gpu_hours"] * 6.36, abs=0.01)
    for name, source in report["sources"].items():
        assert 0 < source["rows_to_read"] < 10**8, name  # every source bounded
        assert source["train_tokens"] > 0
    assert sum(s["train_tokens"] for s in report["sources"].values()) == pytest.approx(
        report["train_tokens_planned"], abs=len(report["sources"]))
    assert report["train_tokens_planned"] == pytest.approx(
        report["budget_gpu_hours"] * 3600 * report["tokens_per_second_per_gpu"] / report["epochs"], rel=1e-6)
    assert "train tokens" in result.stdout and "rows to read" in result.stdout  # the readable table
    assert json.loads(Path("data/plan/sources.json").read_text())["order"] == list(report["sources"])


def sources(**entries) -> dict:
    return {name: {"dataset": {"path": f"{name}.jsonl", "format": "text"}, **figures}
            for name, figures in entries.items()}


def test_sources_share_the_tokens_by_weight_and_a_small_source_gives_its_rest_to_the_others():
    params = params_with({"budget": {"gpu_hours": 1, "tokens_per_second": 1000, "read_margin": 1.0},
                          "train": {"num_train_epochs": 1},
                          "data": {"sources": sources(
                              big=dict(weight=2, tokens_per_row=100, survival=0.5),
                              other=dict(weight=1, tokens_per_row=100, survival=1.0),
                              small=dict(weight=1, tokens_per_row=100, survival=1.0, rows=100))}})
    planned = plan.shares(3_600_000, params)
    assert planned["small"] == {"rows_to_read": 100, "tokens": 10_000, "limited_by": "rows"}
    rest = 3_600_000 - 10_000
    assert planned["big"]["tokens"] == pytest.approx(rest * 2 / 3)
    assert planned["other"]["tokens"] == pytest.approx(rest / 3)
    assert planned["big"]["rows_to_read"] == pytest.approx(rest * 2 / 3 / 100 / 0.5, abs=1)  # survival 0.5: twice


def test_more_hours_buy_more_rows_and_max_samples_overrides_the_plan():
    def rows(hours, **figures):
        params = params_with({"budget": {"gpu_hours": hours}, "data": {"sources": sources(
            web=dict(tokens_per_row=1000, survival=0.7, **figures))}})
        return plan.shares(hours * 3600 * params.budget.tokens_per_second / 3, params)["web"]["rows_to_read"]

    assert rows(20) == pytest.approx(2 * rows(10), rel=1e-4)
    assert rows(20, max_samples=1234) == 1234 == rows(40, max_samples=1234)


def test_a_price_changes_the_report_but_not_what_the_data_stages_read(workdir):
    plan.run(params_with({}))
    before = {p.name: p.read_bytes() for p in Path("data/plan").iterdir()}
    cost = json.loads(Path("reports/plan.json").read_text())["usd"]
    plan.run(params_with({"budget": {"usd_per_gpu_hour": 3.0}}))
    assert {p.name: p.read_bytes() for p in Path("data/plan").iterdir()} == before
    assert json.loads(Path("reports/plan.json").read_text())["usd"] < cost
    plan.run(params_with({"budget": {"gpu_hours": 10}}))
    assert {p.name: p.read_bytes() for p in Path("data/plan").iterdir()} != before
