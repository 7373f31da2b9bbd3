import pytest
import yaml

from pipeline.params import ParamsError, load
from tests.tiny import REPO


def write(tmp_path, mutate):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_committed_params_are_the_seed_run_on_gemma_3_27b(params):
    assert params.model.id == "google/gemma-3-27b-it"
    assert params.tokenize.max_seq_length == 2048
    # the original plan's flags, except --packing False: the measured faster path packs (bench/README.md)
    assert (params.tokenize.packing, params.train.attention, params.train.liger) == (True, "varlen", True)
    t = params.train
    assert (t.num_train_epochs, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (3, 4, 8)
    assert (t.learning_rate, t.lora_r, t.lora_alpha) == (2e-4, 16, 16)
    assert [s.dataset.path for s in params.data.sources.values()] == [
        "wikimedia/wikipedia", "HuggingFaceFW/fineweb-2", "teknium/OpenHermes-2.5", "CohereLabs/aya_dataset"]
    assert 10 <= params.budget.gpu_hours <= 30 and params.budget.gpus == 1  # one B200 for 10-30 hours


def test_varlen_attention_without_packing_is_refused(tmp_path):
    path = write(tmp_path, lambda raw: raw["tokenize"].update(packing=False))
    with pytest.raises(ParamsError, match=r"train.attention: varlen needs packed rows \(tokenize.packing: true\)"):
        load(path)


def test_float8_products_without_fused_projections_are_refused(tmp_path):
    path = write(tmp_path, lambda raw: raw["train"].update(fused_lora=False, float8_products=True))
    with pytest.raises(ParamsError, match=r"train.float8_products: the float8 products are the fused projections'"):
        load(path)


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw["train"].update(lora_rank=8))
    with pytest.raises(ParamsError, match=r"train\.lora_rank: unknown key \(did you mean lora_r\?\)$"):
        load(path)


def test_a_misspelt_key_is_named_before_the_missing_key_it_causes(tmp_path):
    path = write(tmp_path, lambda raw: raw["train"].update(lora_rr=raw["train"].pop("lora_r")))
    with pytest.raises(ParamsError, match=r"params.yaml: train\.lora_rr: unknown key \(did you mean lora_r\?\) "
                                          r"\(and 1 more\)$"):
        load(path)


def test_a_misspelt_section_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw.update(trian={"lora_r": 32}))
    with pytest.raises(ParamsError, match=r"trian: unknown section \(did you mean train\?\)$"):
        load(path)


def test_a_misspelt_source_key_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw["data"]["sources"]["aya"].update(wieght=2))
    with pytest.raises(ParamsError, match=r"data\.sources\.aya\.wieght: unknown key \(did you mean weight\?\)$"):
        load(path)


def test_wrong_type_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw["train"].update(lora_r="sixteen"))
    with pytest.raises(ParamsError, match=r"train\.lora_r: .*integer.*'sixteen'"):
        load(path)


def test_unknown_source_format_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw["data"]["sources"]["wikipedia"]["dataset"].update(format="csv"))
    with pytest.raises(ParamsError, match=r"data\.sources\.wikipedia\.dataset\.format"):
        load(path)


def test_a_source_name_that_is_no_folder_name_is_refused(tmp_path):
    path = write(tmp_path, lambda raw: raw["data"]["sources"].update({"my web": raw["data"]["sources"].pop("aya")}))
    with pytest.raises(ParamsError, match=r"source names may hold only letters.*'my web'"):
        load(path)


def test_a_cross_field_error_is_one_line_without_the_params(tmp_path):
    path = write(tmp_path, lambda raw: raw["tokenize"].update(packing=False))
    with pytest.raises(ParamsError) as error:
        load(path)
    assert str(error.value) == (f"{path}: train.attention: varlen needs packed rows (tokenize.packing: true); "
                                "use sdpa")


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lora_r: [1\n")
    with pytest.raises(ParamsError, match=r"params.yaml: line \d+ not valid YAML"):
        load(path)


def test_the_check_stage_names_a_task_that_lm_eval_does_not_have(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, lambda raw: raw["evaluate"].update(lm_eval_tasks=["xcopa_tr", "TurkishMMLU"]))
    result = subprocess.run([sys.executable, "-m", "pipeline.check", str(path)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.strip() == ("error: evaluate.lm_eval_tasks: 'TurkishMMLU' is not an lm-eval task "
                                     "(did you mean turkishmmlu?)")


def test_every_default_lm_eval_task_exists(params):
    from pipeline.eval_sets import check_lm_eval_tasks

    check_lm_eval_tasks(params.evaluate)  # raises, naming the task, if one does not
