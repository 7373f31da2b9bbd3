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
    # the seed's flags, except --packing False: the measured faster path packs (bench/README.md)
    assert (params.tokenize.packing, params.train.attention, params.train.liger) == (True, "varlen", True)
    t = params.train
    assert (t.num_train_epochs, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (3, 4, 8)
    assert (t.learning_rate, t.lora_r, t.lora_alpha) == (2e-4, 16, 16)
    assert [s.path for s in params.data.sources] == [
        "wikimedia/wikipedia", "HuggingFaceFW/fineweb-2", "teknium/OpenHermes-2.5", "CohereLabs/aya_dataset"]


def test_varlen_attention_without_packing_is_refused(tmp_path):
    path = write(tmp_path, lambda raw: raw["tokenize"].update(packing=False))
    with pytest.raises(ParamsError, match=r"train.attention: varlen needs packed rows \(tokenize.packing: true\)"):
        load(path)


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw["train"].update(lora_rank=8))
    with pytest.raises(ParamsError, match=r"train\.lora_rank: unknown key"):
        load(path)


def test_wrong_type_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw["train"].update(lora_r="sixteen"))
    with pytest.raises(ParamsError, match=r"train\.lora_r: .*integer.*'sixteen'"):
        load(path)


def test_unknown_source_format_is_named(tmp_path):
    path = write(tmp_path, lambda raw: raw["data"]["sources"][0].update(format="csv"))
    with pytest.raises(ParamsError, match=r"data\.sources\.0\.format"):
        load(path)


def test_duplicate_source_names_are_refused(tmp_path):
    path = write(tmp_path, lambda raw: raw["data"]["sources"][1].update(name="wikipedia"))
    with pytest.raises(ParamsError, match="repeated: wikipedia"):
        load(path)


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lora_r: [1\n")
    with pytest.raises(ParamsError, match=r"params.yaml: line \d+ not valid YAML"):
        load(path)
