"""The user's three verbs against a real S3 server on loopback (moto): dvc repro/exp run, dvc push, dvc pull of
only the adapter in a fresh clone, dvc artifacts get, queued experiments; and no secret in what a run writes."""
import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import GIT_USER, copy_repository, tiny_overlay
from tests.test_pipeline import BIN, sh

BUCKET = "gemma-tr-test"
# Planted credentials: unique strings that must never reach a file the pipeline writes or git tracks
# (assembled at run time, so that this file does not contain them either).
SECRETS = {"HF_TOKEN": "hf_" + "Planted" * 5, "AWS_ACCESS_KEY_ID": "AKIA" + "PLANTED" * 2 + "XY",
           "AWS_SECRET_ACCESS_KEY": "Secret" * 6 + "Planted"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1, with an empty bucket; stopped after the module."""
    port = free_port()
    server = subprocess.Popen([f"{BIN}/moto_server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                server.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=SECRETS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=SECRETS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_model_dir, s3):
    """The tiny demo run with planted secrets in the environment, then pushed; dvc.lock committed."""
    project = copy_repository(tmp_path_factory.mktemp("project"))
    sh("dvc", "remote", "modify", "storage", "url", f"s3://{BUCKET}/store", cwd=project)
    sh("dvc", "remote", "modify", "storage", "endpointurl", s3, cwd=project)
    overlay = tiny_overlay(project, tiny_model_dir)
    sh(sys.executable, "-m", "tools.experiment", str(overlay), cwd=project, env=SECRETS)
    sh("dvc", "push", cwd=project, env=SECRETS)
    sh("git", "add", "-A", cwd=project)
    sh("git", *GIT_USER, "commit", "-qm", "demo run", cwd=project)
    return project


def digests(directory: Path) -> dict:
    return {str(p.relative_to(directory)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_no_secret_reaches_any_file_the_run_wrote_or_git_tracks(pushed):
    leaks = []
    for path in pushed.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.stat().st_size < 50_000_000:
            content = path.read_bytes()
            leaks += [f"{path}: {name}" for name, value in SECRETS.items() if value.encode() in content]
    assert not leaks


def test_fresh_clone_pulls_only_the_adapter_with_identical_hashes(pushed, tmp_path, s3):
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(pushed), str(clone))
    result = sh("dvc", "pull", "models/adapter", cwd=clone, env=SECRETS)
    assert digests(clone / "models/adapter") == digests(pushed / "models/adapter")
    assert not (clone / "data").exists() and not (clone / "models/base").exists(), result.stdout
    # a documented command answers a Turkish prompt from base + pulled adapter (the base comes from the cache
    # here; on a laptop `dvc pull base_model` or the Hub supplies it)
    sh("dvc", "pull", "base_model", cwd=clone, env=SECRETS)
    answer = sh(sys.executable, "-m", "tools.generate", "Ankara nerede?", "--max-new-tokens", "5", cwd=clone)
    assert answer.stdout.startswith("> Ankara nerede?\n")


def test_artifacts_get_fetches_the_adapter_without_a_clone(pushed, tmp_path):
    # a version is registered with a git tag in the model-registry convention (what `gto register` writes)
    sh("git", *GIT_USER, "tag", "-a", "gemma-tr-adapter@v0.1.0", "-m", "Registering gemma-tr-adapter v0.1.0",
       cwd=pushed)
    out = tmp_path / "fetched"
    sh("dvc", "artifacts", "get", str(pushed), "gemma-tr-adapter", "-o", str(out), env=SECRETS)
    assert digests(out) == digests(pushed / "models/adapter")


def test_unreachable_remote_says_so_and_writes_nothing(pushed, tmp_path):
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(pushed), str(clone))
    sh("dvc", "remote", "modify", "--local", "storage", "endpointurl", f"http://127.0.0.1:{free_port()}", cwd=clone)
    result = sh("dvc", "pull", "models/adapter", cwd=clone, env=SECRETS, check=False)
    assert result.returncode != 0
    assert "Could not connect to the endpoint URL" in result.stderr, result.stderr
    assert not (clone / "models/adapter").exists()


def test_experiments_run_queue_show_apply_and_push(pushed, tmp_path):
    origin = tmp_path / "origin.git"
    sh("git", "init", "-q", "--bare", str(origin))
    sh("git", "remote", "add", "origin", str(origin), cwd=pushed)
    sh("git", "push", "-q", "origin", "HEAD", cwd=pushed)

    sh("dvc", "exp", "run", "-n", "wide", "-S", "train.lora_r=32", "-S", "train.learning_rate=1e-4", cwd=pushed,
       env=SECRETS)
    sh("dvc", "exp", "run", "--queue", "-n", "narrow", "-S", "train.lora_r=8", cwd=pushed, env=SECRETS)
    sh("dvc", "queue", "start", "-j", "1", cwd=pushed)
    deadline = time.time() + 600
    while "narrow" not in sh("dvc", "exp", "list", "--name-only", cwd=pushed).stdout:
        status = sh("dvc", "queue", "status", cwd=pushed).stdout
        assert "Failed" not in status, sh("dvc", "queue", "logs", "narrow", cwd=pushed, check=False).stdout
        assert time.time() < deadline, status
        time.sleep(3)

    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=pushed).stdout)
    experiments = {e["name"]: e for row in shown for e in (row.get("experiments") or [])
                   for e in [e["revs"][0]] if e.get("name")}
    for name, rank in (("wide", 32), ("narrow", 8)):
        data = experiments[name]["data"]
        assert data["params"]["params.yaml"]["data"]["train"]["lora_r"] == rank
        assert "general" in data["metrics"]["reports/metrics/eval.json"]["data"]

    sh("dvc", "exp", "apply", "narrow", cwd=pushed)
    assert "lora_r: 8" in (pushed / "params.yaml").read_text()
    sh("dvc", "exp", "push", "origin", "narrow", cwd=pushed, env=SECRETS)
    refs = sh("git", "ls-remote", str(origin), cwd=pushed).stdout
    assert "refs/exps/" in refs
