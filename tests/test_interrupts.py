"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and a stopped pod (SIGTERM) end every
stage within seconds, with exit code 130 or 143 and one line; the next run resumes and ends as an
uninterrupted run ends. Any hang fails the test by its timeout."""
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_resume import finish, many_shards, snapshot, stage_process, tokenized  # noqa: F401 - fixtures

DEADLINE = 20  # seconds a stage may take to stop


def stop(process: subprocess.Popen, signum: int, after: float) -> tuple[int, str]:
    """Signal the stage's whole process group `after` seconds in (or once it has ended); its exit code and
    output. Fails if it has not stopped within DEADLINE seconds."""
    try:
        process.wait(timeout=after)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signum)
    try:
        output, _ = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"the stage did not stop within {DEADLINE} s of signal {signum}:\n"
                             f"{output[-3000:]}") from None
    return process.returncode, output


def assert_stopped_cleanly(code: int, output: str, signum: int) -> bool:
    """True when the signal stopped the stage (False: it had finished first)."""
    if code == 0:
        return False
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert code == expected, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = re.findall(r"error: .*", output)  # (a progress bar may leave the cursor in its line, or print after)
    assert len(errors) == 1, output[-3000:]
    assert "run the stage again to resume" in errors[0] or "nothing was changed" in errors[0], errors[0]
    return True


def interrupt_until(stage: tuple[str, ...], output: str, sigints: int, sigterms: int, latest: float, seed: int):
    """Run the stage and signal it, from start-up to `latest` seconds in, until SIGINT has stopped it `sigints`
    times and SIGTERM `sigterms` times. A resumed run has less left to do, and a run that finished first starts
    over (its `output` removed), so it tries as often as it takes, within a bound."""
    rng = random.Random(seed)
    stopped = {signal.SIGINT: 0, signal.SIGTERM: 0}
    for attempt in range(3 * (sigints + sigterms)):
        if stopped[signal.SIGINT] >= sigints and stopped[signal.SIGTERM] >= sigterms:
            break
        signum = signal.SIGTERM if attempt % 6 == 5 or stopped[signal.SIGINT] >= sigints else signal.SIGINT
        code, text = stop(stage_process(*stage, start_new_session=True), signum, after=rng.uniform(0.1, latest))
        stopped[signum] += assert_stopped_cleanly(code, text, signum)
        if code == 0:
            shutil.rmtree(output)
    assert stopped[signal.SIGINT] >= sigints and stopped[signal.SIGTERM] >= sigterms, stopped


def test_twenty_interrupts_mid_filter_each_stop_it_at_once_and_it_still_ends_as_an_uninterrupted_run(many_shards):
    finish("prepare", "web")
    finish("filter")
    reference = snapshot("data/filtered")
    shutil.rmtree("data/filtered")
    # anywhere from start-up (models, the evaluation scan) to the last shards
    interrupt_until(("filter",), "data/filtered", sigints=20, sigterms=4, latest=3.0, seed=0)
    finish("filter")
    assert snapshot("data/filtered") == reference


def test_interrupts_mid_prepare_stop_it_at_once_and_it_still_ends_as_an_uninterrupted_run(many_shards):
    finish("prepare", "web")
    reference = snapshot("data/prepared")
    shutil.rmtree("data/prepared")
    interrupt_until(("prepare", "web"), "data/prepared", sigints=4, sigterms=2, latest=1.2, seed=1)
    finish("prepare", "web")
    assert snapshot("data/prepared") == reference


def test_interrupts_mid_training_stop_it_at_once_and_it_resumes(tokenized):
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        process = stage_process("train", start_new_session=True)
        deadline = time.time() + 300
        while not list(Path("models/checkpoints").glob("checkpoint-*/trainer_state.json")):
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.05)
        code, output = stop(process, signum, after=0.5)
        assert assert_stopped_cleanly(code, output, signum)
        assert not Path("models/adapter").exists()
    assert "resuming from models/checkpoints/checkpoint-" in finish("train")
    assert Path("models/adapter/adapter_config.json").exists()


def test_a_stop_that_a_native_library_wraps_in_its_own_error_still_ends_as_a_stop(tmp_path):
    """A signal's handler can run inside a compiled library's call back into Python (numba's lazy unpickling in
    the filter's word scan): the library reports it as a SystemError caused by the stop. A source's reader may
    turn it into a PipelineError naming its file: still a stop."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import os, signal\n"
        "from pipeline.errors import PipelineError\n"
        "from pipeline.stage import main\n"
        "def run(params):\n"
        "    try:\n"
        "        if os.environ['STOP'] == 'none':\n"
        "            raise ValueError('not a stop')\n"
        "        signal.raise_signal(getattr(signal, os.environ['STOP']))\n"
        "    except BaseException as exc:\n"
        "        if os.environ.get('WRAP') == 'PipelineError':\n"
        "            raise PipelineError('data/x.parquet: cannot read')\n"
        "        raise SystemError('CPUDispatcher returned a result with an exception set') from exc\n"
        "main(run, 'a stage')\n")
    for stop_signal, wrap, code in (("SIGTERM", "SystemError", 143), ("SIGINT", "SystemError", 130),
                                    ("SIGINT", "PipelineError", 130), ("none", "SystemError", 1)):
        done = subprocess.run([sys.executable, str(script), "--params", str(Path("params.yaml").resolve())],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(Path.cwd()), "STOP": stop_signal, "WRAP": wrap})
        assert done.returncode == code, done.stderr
        if stop_signal == "none":  # no stop in the chain: the library's error, with its traceback
            assert "SystemError" in done.stderr and "ValueError: not a stop" in done.stderr, done.stderr
        else:
            assert "Traceback" not in done.stderr and done.stderr.count("error: ") == 1, done.stderr
