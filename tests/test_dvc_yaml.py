"""dvc.yaml says what each stage depends on: its code deps are exactly the project modules it imports (so an
edit reruns exactly the stages it can change), and every param it lists exists."""
import re

import pytest
import yaml

from pipeline.closure import closure
from tests.tiny import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def definition(stage: dict) -> dict:
    return stage.get("do", stage)  # foreach stages keep theirs under `do`


def script(command: str) -> str:
    module = re.search(r"python -m ([\w.]+)", command)[1]
    return module.replace(".", "/") + ".py"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stages_code_deps_are_the_modules_it_imports(name):
    stage = definition(STAGES[name])
    listed = {dep for dep in stage["deps"] if dep.endswith(".py")}
    assert listed == {str(path) for path in closure(REPO / script(stage["cmd"]))}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stages_params_exist_in_params_yaml(name):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for entry in definition(STAGES[name]).get("params", []):
        if isinstance(entry, dict):  # a whole file
            continue
        key = entry.replace("${key}", next(iter(params["data"]["sources"])))
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: {entry} is not in params.yaml"
            node = node[part]


def test_the_closure_follows_imports_inside_functions_and_from_packages():
    found = {str(p) for p in closure(REPO / "stages/evaluate.py")}
    assert {"stages/evaluate.py", "pipeline/models.py", "pipeline/chat.py", "pipeline/language.py",
            "pipeline/text.py", "pipeline/paths.py"} <= found
    assert "pipeline/dedup.py" not in found  # evaluate judges languages, it dedups nothing
