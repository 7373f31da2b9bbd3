"""prepare and filter as stages: bad input, atomic outputs, decontamination, determinism."""
import json
from collections import Counter

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.judge import Judge, is_validation
from pipeline.language import TurkishDetector
from pipeline.params import validate
from stages import filter as filter_stage
from stages import plan, prepare
from tests.test_filter import TURKISH, TURKISH_MORE, deduplicator
from tests.tiny import REPO
from tools.experiment import merged


def source(path, format="text", **plan_figures) -> dict:
    """One entry of data.sources; the plan's figures large enough that a test's file is read whole."""
    return {"dataset": {"path": str(path), "format": format}, "tokens_per_row": 100, "survival": 1.0,
            **plan_figures}


DEMO_SOURCES = {
    "web": source(REPO / "demo/data/web.jsonl"),
    "wikipedia": source(REPO / "demo/data/wikipedia.parquet", "wikipedia"),
    "openhermes": source(REPO / "demo/data/chats.json", "sharegpt"),
}


# the repository's files params name, by absolute path: tests run the stages in a folder of their own
EVALUATION = {"evaluate": {"turkish_general_file": str(REPO / "configs/eval/turkish_general.jsonl"),
                           "english_file": str(REPO / "configs/eval/english.jsonl")},
              "train": {"accelerate_config": str(REPO / "configs/accelerate/single_gpu.yaml")}}


def params_raw(overlay: dict) -> dict:
    """params.yaml with the overlay laid over it (and the evaluation files by absolute path)."""
    return merged(merged(yaml.safe_load((REPO / "params.yaml").read_text()), EVALUATION), overlay)


def params_with(overlay: dict):
    return validate(params_raw(overlay), "test")


def prepare_all(params) -> dict:
    """plan, then prepare@<source> for every source: each source's report."""
    plan.run(params)
    return {name: prepare.run(params, name) for name in params.data.sources}


def judge_for(params, contamination, dedup) -> Judge:
    return Judge(params.filter, TurkishDetector(params.filter), contamination, (dedup.bands, dedup.rows))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_too_many_bad_rows_stop_with_file_line_and_keep_previous_output(workdir):
    good = workdir / "good.jsonl"
    good.write_text(json.dumps({"id": 1, "text": TURKISH}) + "\n")
    prepare_all(params_with({"data": {"sources": {"web": source(good)}}}))
    before = sorted(p.read_bytes() for p in (workdir / "data/prepared").rglob("*.parquet"))

    bad = workdir / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "text": TURKISH}) + "\n" + '{"id": 2, "text": ' + "\n")
    params = params_with({"data": {"sources": {"web": source(bad)}, "max_bad_fraction": 0.1}})
    with pytest.raises(PipelineError, match=rf"1 of 2 rows are bad.*first: {bad}:2: malformed JSON"):
        prepare.run(params, "web")
    after = sorted(p.read_bytes() for p in (workdir / "data/prepared").rglob("*.parquet"))
    assert after == before  # the failed run left the previous output as it was
    assert not [p for p in (workdir / "data").iterdir() if p.name.startswith(".")]  # no temporary left


def test_bad_rows_under_the_threshold_are_counted_and_skipped(workdir):
    path = workdir / "web.jsonl"
    path.write_text("\n".join([json.dumps({"id": i, "text": TURKISH + f" {i}"}) for i in range(9)] + ["{oops"]))
    report = prepare_all(params_with({"data": {"sources": {"web": source(path)}, "max_bad_fraction": 0.2}}))["web"]
    assert {key: report[key] for key in ("read", "kept", "bad", "skipped", "shards")} == {
        "read": 10, "kept": 9, "bad": 1, "skipped": {}, "shards": 1}


def test_max_samples_reads_a_seeded_sample_spread_over_the_source(workdir):
    import pyarrow.parquet as pq

    path = workdir / "web.jsonl"
    path.write_text("\n".join([json.dumps({"id": i, "text": TURKISH + f" {i}"}) for i in range(400)]))

    def ids(seed):
        report = prepare_all(params_with({"data": {"sources": {"web": source(path, max_samples=40)}, "seed": seed}}))
        return report["web"]["read"], [int(row["id"]) for shard in sorted((workdir / "data/prepared/web").glob("*"))
                                       for row in pq.read_table(shard, columns=["id"]).to_pylist()]

    read, first = ids(0)
    assert 20 <= read <= 60 and len(first) == read  # a seeded share of the rows, ~40
    assert first != list(range(read)) and max(first) > 300  # not the first rows: from the whole file
    assert ids(0) == (read, first) and ids(1)[1] != first  # the same sample for a seed, another for another


def test_json_escaped_surrogates_are_counted_as_bad_rows_not_a_crash(workdir):
    # "\\ud800" is valid JSON but no text: Arrow cannot write it, so prepare must count the row, not crash
    path = workdir / "web.jsonl"
    path.write_text("\n".join([json.dumps({"id": i, "text": TURKISH + f" {i}"}) for i in range(9)]
                              + ['{"id": 9, "text": "Merhaba \\ud800 dünya"}']))
    report = prepare_all(params_with({"data": {"sources": {"web": source(path)}, "max_bad_fraction": 0.2}}))["web"]
    assert (report["kept"], report["bad"]) == (9, 1)


def test_filter_outputs_are_byte_identical_across_runs(workdir):
    params = params_with({"data": {"sources": DEMO_SOURCES}, "filter": {"validation_fraction": 0.15}})
    prepare_all(params)
    first = filter_stage.run(params)
    snapshot = {p.relative_to(workdir): p.read_bytes() for p in (workdir / "data/filtered").rglob("*.parquet")}
    second = filter_stage.run(params)
    assert first == second
    assert {p.relative_to(workdir): p.read_bytes() for p in (workdir / "data/filtered").rglob("*.parquet")} == snapshot
    assert (workdir / "reports/data.md").read_text().startswith("# Filtered data")


def test_training_rows_sharing_13_words_with_evaluation_texts_are_dropped(workdir):
    benchmark = workdir / "benchmark.jsonl"
    benchmark.write_text(json.dumps({"question": "Soru: " + TURKISH_MORE, "choices": ["a", "b"]}) + "\n")
    rows = [{"id": "clean", "text": TURKISH},
            {"id": "leaks-benchmark", "text": "Bir hikaye anlatayım. " + TURKISH_MORE + " Sonra uyuduk ve dinlendik."}]
    path = workdir / "web.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    params = params_with({"data": {"sources": {"web": source(path)}},
                          "filter": {"decontamination_files": [str(benchmark)], "validation_fraction": 0.01,
                                     "min_words": 5}})
    kept, counts = filtered_here(params, rows, workdir)
    assert [row["id"] for _, row in kept] == ["clean"]
    assert counts == {"decontamination": 1, "kept_train": 1}


def filtered_here(params, rows: list[dict], workdir) -> tuple[list, Counter]:
    """The filter's judge and dedup in this process over `rows` of source "web", after prepare."""
    from pipeline.eval_sets import evaluation_files

    prepare_all(params)
    shards = [shard for _, shard, _ in filter_stage.input_shards(["web"])]
    contamination = filter_stage.evaluation_ngrams(shards, params.filter, evaluation_files(params))
    dedup = deduplicator(workdir / "dedup")
    counts = Counter()
    prepared = [dict(r, source="web", kind="text", messages=None, meta=None) for r in rows]
    kept = list(filter_stage.filter_rows(prepared, judge_for(params, contamination, dedup), dedup, counts, Counter()))
    return kept, counts


def test_the_local_lm_eval_tasks_evaluate_runs_are_decontaminated_against(workdir):
    """Their data files are found from the task YAMLs (lm-eval's !function tags and all); tasks not run are not."""
    (workdir / "tasks").mkdir()
    (workdir / "bench").mkdir()
    (workdir / "tasks" / "hikaye.yaml").write_text(
        "task: tr_hikaye\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: bench/hikaye.jsonl\n"
        "process_docs: !function utils.process_docs\n")
    (workdir / "tasks" / "other.yaml").write_text(
        "task: not_run\ndataset_path: json\ndataset_kwargs:\n  data_files: bench/other.jsonl\n")
    (workdir / "bench" / "hikaye.jsonl").write_text(json.dumps({"passage": TURKISH_MORE, "answer": 1}) + "\n")
    (workdir / "bench" / "other.jsonl").write_text(json.dumps({"passage": TURKISH}) + "\n")
    rows = [{"id": "clean", "text": TURKISH},
            {"id": "leaks-benchmark", "text": "Bir hikaye anlatayım. " + TURKISH_MORE + " Sonra uyuduk ve dinlendik."}]
    path = workdir / "web.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    params = params_with({"data": {"sources": {"web": source(path)}},
                          "filter": {"validation_fraction": 0.01, "min_words": 5},
                          "evaluate": {"lm_eval_tasks": ["tr_hikaye", "belebele_tur_Latn"],
                                       "lm_eval_include_path": "tasks"}})
    kept, counts = filtered_here(params, rows, workdir)
    assert [row["id"] for _, row in kept] == ["clean"] and counts["decontamination"] == 1


def assert_filter_stops(workdir, overlay: dict, message: str) -> None:
    """The demo sources prepared, the filter stops with `message` and leaves no partial output."""
    params = params_with({"data": {"sources": DEMO_SOURCES}, **overlay})
    prepare_all(params)
    with pytest.raises(PipelineError, match=message):
        filter_stage.run(params)
    assert not (workdir / "data" / ".filtered.partial").exists()


def test_a_broken_lm_eval_task_yaml_stops_the_filter_naming_it(workdir):
    (workdir / "tasks").mkdir()
    (workdir / "tasks" / "broken.yaml").write_text("task: [unclosed\n")
    assert_filter_stops(workdir, {"evaluate": {"lm_eval_tasks": ["x"], "lm_eval_include_path": "tasks"}},
                        r"tasks/broken.yaml: not a readable lm-eval task YAML \([^\n]*\)$")


def test_a_malformed_evaluation_file_stops_the_filter_naming_its_line(workdir):
    benchmark = workdir / "benchmark.jsonl"
    benchmark.write_text(json.dumps({"question": TURKISH_MORE}) + "\n{not json\n")
    assert_filter_stops(workdir, {"filter": {"decontamination_files": [str(benchmark)]}},
                        rf"{benchmark}:2: malformed JSON")


def test_the_filter_report_says_what_it_decontaminated_against(workdir):
    benchmark = workdir / "benchmark.jsonl"
    benchmark.write_text(json.dumps({"question": "Kısa bir soru mu?", "passage": TURKISH_MORE}) + "\n")
    params = params_with({"data": {"sources": DEMO_SOURCES}, "filter": {"decontamination_files": [str(benchmark)],
                                                                        "validation_fraction": 0.15}})
    prepare_all(params)
    report = filter_stage.run(params)["decontamination"]
    assert report["files"] == [str(benchmark), EVALUATION["evaluate"]["turkish_general_file"],
                               EVALUATION["evaluate"]["english_file"]]
    assert report["shorter_than_13_words"] >= 1
    assert f"and {benchmark}" in (workdir / "reports/data.md").read_text()


def test_validation_rows_protect_themselves_from_training_copies(workdir):
    ids = [str(i) for i in range(40)]
    validation = next(i for i in ids if is_validation({"source": "web", "id": i}, 0.5))
    train = next(i for i in ids if not is_validation({"source": "web", "id": i}, 0.5))
    path = workdir / "web.jsonl"
    path.write_text(json.dumps({"id": validation, "text": TURKISH + " " + TURKISH_MORE}) + "\n"
                    + json.dumps({"id": train, "text": "Önsöz yerine. " + TURKISH_MORE}) + "\n")
    params = params_with({"data": {"sources": {"web": source(path)}},
                          "filter": {"validation_fraction": 0.5, "min_words": 5, "near_dedup_threshold": 0.9}})
    prepare_all(params)
    with pytest.raises(PipelineError, match="kept 0 train"):
        filter_stage.run(params)


def test_prepare_report_records_code_and_library_versions(workdir):
    params = params_with({"data": {"sources": {"web": DEMO_SOURCES["web"]}}})
    provenance = prepare_all(params)["web"]["provenance"]
    assert provenance["libraries"]["transformers"] and provenance["libraries"]["datasets"]
    assert provenance["python"].count(".") == 2
    assert set(provenance["git"]) == {"commit", "dirty"}


def test_a_model_that_is_not_a_causal_lm_is_refused_in_one_line(workdir):
    from transformers import ViTConfig

    from stages import base_model

    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(
        workdir / "vit")
    with pytest.raises(PipelineError, match=r"model.id: .*vit is a 'vit' model, not a causal language model"):
        base_model.run(params_with({"model": {"id": str(workdir / "vit"), "gguf_package": None}}))
    assert not (workdir / "models/base").exists()


def test_gpu_preflight_refuses_a_base_that_cannot_fit(workdir, tiny_model_dir):
    from pipeline.models import check_gpu_memory, four_bit_footprint

    need = four_bit_footprint(tiny_model_dir)
    embedding = 401 * 64  # the tiny model's vocabulary x hidden size, kept in fp32
    assert embedding * 4 < need < embedding * 4 + 200_000  # the rest: ~150k decoder weights at ~0.56 bytes
    check_gpu_memory(need, 80 * 2**30, "H100")
    with pytest.raises(PipelineError, match=r"model.id: the 4-bit base needs about .* GiB free"):
        check_gpu_memory(15 * 2**30, 16 * 2**30, "a 16 GiB GPU")


def test_a_huge_row_is_read_and_dropped_by_its_rule_not_the_stage(workdir):
    huge = ("Bu çok uzun bir cümledir ve tekrar eder. " * 150_000)[:5_000_000]  # 5 MB, ~800k words
    path = workdir / "huge.jsonl"
    path.write_text(json.dumps({"id": "huge", "text": huge}) + "\n")
    params = params_with({"data": {"sources": {"huge": source(path), **DEMO_SOURCES}},
                          "filter": {"validation_fraction": 0.15}})
    assert prepare_all(params)["huge"]["kept"] == 1
    report = filter_stage.run(params)["sources"]["huge"]
    assert report["dropped"] == {"word_count": 1}  # over filter.max_words


def test_a_dropped_download_or_a_stop_keeps_finished_units_and_bad_input_does_not(workdir):
    from pipeline.errors import RetryableError
    from pipeline.journal import Journal

    def interrupted(error: BaseException, unit: str) -> None:
        with pytest.raises(type(error)):
            with Journal(workdir / "out", {"params": 1}) as journal:
                (journal.work / f"part-{unit}.parquet").write_text("a completed shard")
                journal.done(unit, {"rows": 1})
                raise error

    interrupted(RetryableError("a download broke"), "00000")
    interrupted(KeyboardInterrupt(), "00001")
    assert not (workdir / "out").exists()
    with Journal(workdir / "out", {"params": 2}) as journal:  # other params: nothing is reused
        assert journal.record("00000") is None
    assert not list((workdir / "out").iterdir())

    interrupted(KeyboardInterrupt(), "00000")
    with Journal(workdir / "out", {"params": 1}) as journal:  # the same params: the unit is found done
        assert journal.record("00000") == {"rows": 1}
    assert (workdir / "out/part-00000.parquet").exists() and not (workdir / "out/.journal").exists()

    interrupted(PipelineError("too many bad rows"), "00002")  # running again would fail the same way
    assert not (workdir / ".out.partial").exists()
    assert (workdir / "out/part-00000.parquet").exists()  # the last good output stays


@pytest.mark.parametrize("background", [False, True])
def test_shard_writer_gathers_arrow_tables_into_row_groups_and_cuts_shards(tmp_path, monkeypatch, background):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import shards as shards_module
    from pipeline.rows import ROWS
    from pipeline.shards import ShardWriter

    monkeypatch.setattr(shards_module, "ROW_GROUP", 4)
    rows = [{"id": str(i), "source": "web", "kind": "text", "text": f"metin {i}"} for i in range(23)]
    writer = ShardWriter(tmp_path, shard_rows=10, stem="part-00000", background=background)
    writer.add(rows[0])  # a buffered row goes out before the tables that follow it
    for start in range(1, 23, 3):  # a few rows at a time, as the filter hands them over
        writer.add_table(pa.Table.from_pylist(rows[start : start + 3], schema=ROWS))
    writer.add_table(pa.Table.from_pylist([], schema=ROWS))
    writer.close()
    shards = sorted(tmp_path.glob("*.parquet"))
    assert [p.name for p in shards] == [f"part-00000-{i:05d}.parquet" for i in range(3)]
    groups = [[pq.ParquetFile(p).metadata.row_group(g).num_rows for g in range(pq.ParquetFile(p).num_row_groups)]
              for p in shards]
    assert groups == [[1, 4, 4, 1], [4, 4, 2], [3]]  # full row groups, not one per table of 3
    assert [r["id"] for p in shards for r in pq.read_table(p).to_pylist()] == [str(i) for i in range(23)]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_background_shard_writers_error_reaches_the_caller(tmp_path):
    import pyarrow as pa

    from pipeline.shards import ShardWriter

    writer = ShardWriter(tmp_path, shard_rows=10, background=True)
    wrong = pa.table({"id": ["1"]})  # not the writer's schema: its thread fails to write it
    writer.add_table(wrong)
    with pytest.raises(ValueError, match="schema"):
        writer.close()
    assert not list(tmp_path.glob("*.parquet"))  # the shard never appeared under its name
