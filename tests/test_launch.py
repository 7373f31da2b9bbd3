"""launch/: the SkyPilot task and volume files, read by SkyPilot's own parser and schemas.

SkyPilot is the laptop's tool (requirements-launch.txt), and its Runpod extra pins protobuf below the pipeline's:
this module runs in a venv of its own, without the pipeline's conftest (`make test` does both runs).
"""
import subprocess
from pathlib import Path

import pytest
import sky
import yaml
from sky.utils import common_utils, schemas

REPO = Path(__file__).resolve().parent.parent

TASK = REPO / "launch/runpod.yaml"
VOLUME = REPO / "launch/volume.yaml"
SECRETS = ["HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]


def task(**overrides) -> sky.Task:
    """The task as `sky launch launch/runpod.yaml --env ... --secret ...` builds it."""
    return sky.Task.from_yaml_config(yaml.safe_load(TASK.read_text()), **overrides)


def test_task_file_is_a_valid_skypilot_task_for_one_b200_or_h100_on_runpod():
    parsed = sky.Task.from_yaml(str(TASK))  # schema validation and SkyPilot's own parsing
    assert parsed.name == "gemma-tr"
    resources = list(parsed.resources)
    assert sorted(next(iter(r.accelerators)) for r in resources) == ["B200", "H100"]
    assert all(r.accelerators in ({"B200": 1}, {"H100": 1}) for r in resources)
    assert {str(r.cloud) for r in resources} == {"RunPod"}
    assert all(set(r.image_id.values()) == {"docker:ghcr.io/your-org/gemma-tr:latest"} for r in resources)
    assert parsed.workdir == "."  # the repository itself, .git included


def test_secrets_come_from_the_command_line_and_no_file_holds_a_value():
    raw = yaml.safe_load(TASK.read_text())
    assert raw["secrets"] == {name: None for name in SECRETS}  # names only: values never live in the file
    assert sorted(ref.name for ref in task().managed_secret_refs) == sorted(SECRETS)
    given = task(secrets_overrides=[(name, f"value-of-{name}") for name in SECRETS])
    assert {name: value.get_secret_value() for name, value in given.secrets.items()} == {
        name: f"value-of-{name}" for name in SECRETS}
    assert not set(SECRETS) & set(given.envs)  # secrets are not plain envs, which SkyPilot would show


def test_run_pulls_runs_the_experiment_with_exp_args_then_pushes_it():
    launched = task(env_overrides=[("EXP_ARGS", "-S train.lora_r=32 -S export.gguf=q4_k_m")])
    assert launched.envs["EXP_ARGS"] == "-S train.lora_r=32 -S export.gguf=q4_k_m"
    commands = [line.strip() for line in launched.run.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands[-3:] == ["entrypoint --pull --allow-missing $EXP_ARGS", "dvc exp push origin", "dvc push"]
    assert "cd /workspace/repo" in commands  # the working copy on the network volume: checkpoints survive the pod
    syntax = subprocess.run(["bash", "-n"], input=launched.run, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_volume_file_is_a_runpod_network_volume_in_the_tasks_data_center():
    volume = yaml.safe_load(VOLUME.read_text())
    common_utils.validate_schema(volume, schemas.get_volume_schema(), "Invalid volume YAML: ")
    assert volume["type"] == "runpod-network-volume"
    raw = yaml.safe_load(TASK.read_text())
    assert raw["volumes"] == {"/workspace": volume["name"]}
    assert volume["infra"] == raw["resources"]["infra"]  # a network volume only mounts in its own data center
    assert len(volume["infra"].split("/")) == 3  # runpod/<region>/<data center>: SkyPilot needs the data center


@pytest.mark.parametrize("broken", [{"resources": {"accelerators": {"B200": "one"}}}, {"secretz": {"HF_TOKEN": None}}])
def test_skypilot_rejects_a_broken_task_so_the_checks_above_can_fail(broken):
    config = yaml.safe_load(TASK.read_text())
    config.update(broken)
    with pytest.raises(Exception):
        sky.Task.from_yaml_config(config)
