"""The whole pipeline through DVC in a copy of the repository (the demo's overlay on a tiny Gemma): what it writes,
what a change reruns, and that a failed run keeps the last good outputs."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GIT_USER, copy_repository, tiny_overlay
from tools.experiment import apply

BIN = str(Path(sys.executable).parent)


def sh(*command, check=True, cwd=None, env=None):
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model_dir):
    """The demo's overlay with the tiny model, run once through `dvc exp run`; the result committed, so each
    test can return to it (`restore`)."""
    project = copy_repository(tmp_path_factory.mktemp("project"))
    overlay = tiny_overlay(project, tiny_model_dir)
    run = sh(sys.executable, "-m", "tools.experiment", str(overlay), cwd=project)
    sh("git", "add", "-A", cwd=project)
    sh("git", *GIT_USER, "commit", "-qm", "demo run", cwd=project)
    return project, run


def restore(project: Path) -> None:
    """Back to the committed demo run: params, lock, reports (git) and the outputs (DVC)."""
    sh("git", "checkout", "-q", "--", ".", cwd=project)
    sh("dvc", "checkout", "-q", cwd=project)


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def outputs(project: Path) -> dict:
    """Every file of every stage output, and its bytes."""
    found = {}
    for top in ("data/prepared", "data/filtered", "data/tokenized", "models/adapter"):
        for path in sorted((project / top).rglob("*")):
            if path.is_file():
                found[str(path.relative_to(project))] = path.read_bytes()
    return found


def test_the_demo_writes_every_report_and_a_second_run_reruns_nothing(demo):
    project, run = demo
    assert "No file hash info" not in run.stderr  # DVC's noise about outputs no run has made yet
    assert ran(run.stdout)[:2] == ["check", "plan"]
    evaluation = json.loads((project / "reports/eval.json").read_text())
    assert list(evaluation["headline"])[:3] == ["general", "validation", "english"]
    general = evaluation["turkish_general"]["all"]
    assert general["base"]["tokens"] == general["tuned"]["tokens"] > 0
    assert general["verdict"] in ("better", "same", "worse") and "loss_change_stderr" in general
    validation = evaluation["validation"]["all"]
    assert validation["tuned"]["perplexity"] < validation["base"]["perplexity"], evaluation
    assert {"kind:text", "kind:chat", "source:web", "source:wikipedia", "source:openhermes"} <= set(
        evaluation["validation"])
    sources = {"web", "wikipedia", "openhermes", "help"}  # configs/demo.yaml's
    assert set(evaluation["fertility_tokens_per_word"]) == sources
    assert evaluation["generation"]["prompts"] == 2
    assert "demo_tr_regions/acc" in evaluation["lm_eval"]["demo_tr_regions"]  # ran through lm-eval
    assert evaluation["lm_eval"]["demo_tr_regions"]["demo_tr_regions/acc"]["verdict"] in ("better", "same", "worse")
    assert "belebele_tur_Latn" in evaluation["lm_eval_skipped"]  # needs the Hub, which tests cannot reach
    metrics = json.loads((project / "reports/metrics/eval.json").read_text())
    assert metrics == evaluation["headline"] and metrics["tasks"]["belebele_tur_Latn"] == "skipped"
    samples = (project / "reports/samples.md").read_text()
    assert samples.count("\n| ") == 3 and "| language |" in samples  # header + 2 prompts, languages seen
    assert (project / "models/adapter/adapter_config.json").exists()
    filtered = json.loads((project / "reports/filter.json").read_text())["sources"]
    assert filtered["web"]["dropped"]["language"] >= 6  # the English and Azerbaijani posts
    assert sum(filtered["web"]["languages_dropped"].values()) == filtered["web"]["dropped"]["language"]
    assert filtered["openhermes"]["dropped"]["language"] >= 3  # English chats and the English answer
    assert 0 < json.loads((project / "reports/metrics/filter.json").read_text())["keep_rate"] < 1
    train = json.loads((project / "reports/metrics/train.json").read_text())
    assert set(train) == {"train_loss", "eval_loss", "tokens_per_second_per_device", "peak_gpu_memory_gib",
                          "gpu_hours"}
    assert json.loads((project / "reports/train.json").read_text())["global_step"] == 6
    assert json.loads((project / "reports/plan.json").read_text())["sources"].keys() == sources
    again = sh("dvc", "repro", cwd=project)
    assert ran(again.stdout) == [] and "up to date" in again.stdout, again.stdout
    assert (project / "models/merged/README.md").exists()  # the export stage; export.merge is off in the demo


# The stages each change makes stale by itself (`dvc status`); `check` goes with every change to params.yaml.
RERUNS = {
    "train.lora_r=32": {"train", "export"},  # export: the model card lists the train params
    "train.learning_rate=1e-4": {"train", "export"},
    "train.per_device_train_batch_size=2": {"train", "export"},
    "train.logging_steps=2": {"train", "export"},
    "train.eval_steps=4": {"train", "export"},
    "train.save_steps=4": {"train", "export"},
    "budget.usd_per_gpu_hour=3.0": {"plan"},
    "budget.gpu_hours=1.0": {"plan"},
    "evaluate.max_new_tokens=8": {"evaluate"},
    "export.merge=true": {"export"},
    "tokenize.max_seq_length=256": {"tokenize", "train", "evaluate"},
    "filter.min_words=10": {"filter"},
    "data.sources.web.survival=0.5": {"plan", "export"},  # the card lists the sources
    "data.sources.web.dataset.path=demo/data/help.jsonl": {"plan", "prepare@web", "export"},
    "model.revision=other": {"base_model"},
}


@pytest.mark.parametrize("change", sorted(RERUNS))
def test_a_change_makes_stale_exactly_the_stages_that_use_it(demo, change):
    project, _ = demo
    key, value = change.split("=")
    overlay = value_at(key, value)
    try:
        apply(overlay, project / "params.yaml", replaced=None)  # one value changed, as `-S` changes it
        status = sh("dvc", "status", "--json", cwd=project).stdout
        assert set(json.loads(status)) == {"check"} | RERUNS[change], status
    finally:
        restore(project)


def value_at(key: str, value: str) -> dict:
    import yaml

    overlay: dict = {}
    node = overlay
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)
    return overlay


def test_a_price_reruns_the_plan_alone_and_a_lora_rank_nothing_before_train(demo):
    project, _ = demo
    try:
        price = sh("dvc", "exp", "run", "-S", "budget.usd_per_gpu_hour=3.0", cwd=project)
        assert ran(price.stdout) == ["check", "plan"], price.stdout  # plan's files for the data stages unchanged
        restore(project)
        rank = sh("dvc", "exp", "run", "-S", "train.lora_r=32", cwd=project)
        assert ran(rank.stdout) == ["check", "train", "evaluate", "export"], rank.stdout
    finally:
        restore(project)


FAILURES = {  # a change that makes the stage fail, and the line it fails with
    "prepare@web": ({"data": {"sources": {"web": {"dataset": {"path": "README.md", "format": "text"}}}}},
                    "data.sources.web.dataset: no .json/.jsonl/.parquet file"),
    "filter": ({"filter": {"validation_fraction": 0.0001}}, "error: filter kept"),
    "train": ({"train": {"lora_target_modules": ["no_such_proj"]}}, "train.lora_target_modules: no module"),
}


@pytest.mark.parametrize("launch", ["dvc repro", "dvc exp run"])
@pytest.mark.parametrize("stage", sorted(FAILURES))
def test_a_failed_stage_keeps_the_last_good_outputs_and_status_says_what_is_stale(demo, stage, launch):
    project, _ = demo
    overlay, message = FAILURES[stage]
    before = outputs(project)
    try:
        apply(overlay, project / "params.yaml", replaced=None)
        failed = sh(*launch.split(), cwd=project, check=False)
        assert failed.returncode != 0 and message in failed.stderr + failed.stdout, failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
        assert outputs(project) == before  # byte for byte, every output of every stage
        assert not [p for p in (project / "data").iterdir() if p.name.startswith(".")]  # no partial folder left
        assert stage in json.loads(sh("dvc", "status", "--json", cwd=project).stdout)
    finally:
        restore(project)


def test_a_wrong_typed_value_stops_before_any_output_is_touched_in_one_line(demo):
    project, _ = demo
    before = outputs(project)
    try:
        failed = sh("dvc", "exp", "run", "-S", "train.lora_r=abc", cwd=project, check=False)
        assert failed.returncode != 0 and ran(failed.stdout) == ["check"]
        assert "error: params.yaml: train.lora_r: Input should be a valid integer" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert outputs(project) == before
    finally:
        restore(project)


def test_dag_runs_check_plan_prepare_filter_tokenize_train_evaluate(demo):
    project, _ = demo
    edges = sh("dvc", "dag", "--dot", cwd=project).stdout
    for upstream, downstream in [("plan", "prepare@web"), ("prepare@web", "filter"), ("filter", "tokenize"),
                                 ("tokenize", "train"), ("train", "evaluate"), ("base_model", "tokenize")]:
        assert f'"{upstream}" -> "{downstream}"' in edges, edges


def test_exp_show_fits_a_120_column_terminal(demo):
    project, _ = demo
    command = [line for line in (Path(__file__).parent.parent / "README.md").read_text().splitlines()
               if line.strip().startswith("dvc exp show")][0]
    command = shlex.split(command, comments=True)
    shown = sh(*command, "--no-pager", cwd=project, env={"COLUMNS": "120"}).stdout
    assert max(len(line) for line in shown.splitlines()) <= 120, shown
    assert "…" not in shown and "general.verdict" in shown and "train.lora_r" in shown, shown


def test_the_training_and_evaluation_plots_render_offline(demo):
    project, _ = demo
    sh(sys.executable, "-m", "tools.plots", cwd=project)
    page = (project / "dvc_plots/index.html").read_text()
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    assert "vegaEmbed(" in page and "reports/train/plots/metrics/eval/loss.tsv" in page, page[-3000:]
    assert "#reports_eval_plot_json" in page and "bits_per_byte" in page  # the evaluation plot too


def test_a_typo_in_the_overlay_stops_before_dvc_runs(project):
    bad = project / "bad.yaml"
    bad.write_text("train:\n  lora_rank: 8\n")
    result = sh(sys.executable, "-m", "tools.experiment", str(bad), check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: params.yaml + {bad}: train.lora_rank: unknown key (did you mean lora_r?)"
    assert not Path("data").exists()
