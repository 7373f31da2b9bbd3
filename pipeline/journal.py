"""Resuming a long stage: its work goes into a folder that survives a kill, one unit at a time (an input file,
a shard), and a unit is done once its record is written, after its files. A rerun with the same fingerprint
(params, inputs, code) finds the records and skips those units; a different fingerprint starts afresh.

prepare and filter resume this way; train resumes from the trainer's own checkpoints.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import TracebackType

from pipeline.atomic import replace_dir, write_json
from pipeline.errors import PipelineError, RetryableError

STATE = ".journal"  # the records and the fingerprint, inside the work folder; never part of the output
log = logging.getLogger("journal")


class Journal:
    """`with Journal(out, fingerprint) as journal:` work in `journal.work` (`.<name>.partial` beside `out`), mark
    each finished unit with `journal.done(unit, record)`. When the block ends:
    - normally: the work folder, without the journal and any unfinished `.tmp` file, replaces `out`;
    - with a PipelineError (bad input, bad params): the work folder is discarded, since a rerun would fail the
      same way (a RetryableError, such as a dropped download, keeps it);
    - otherwise (Ctrl-C, a stopped pod, a crash): the work folder stays for the next run."""

    def __init__(self, out: Path | str, fingerprint: dict):
        self.out = Path(out)
        self.work = self.out.with_name(f".{self.out.name}.partial")
        self.state = self.work / STATE
        self._stamp = self.state / "fingerprint.json"
        self._expected = json.dumps(fingerprint, sort_keys=True, default=str)

    def __enter__(self) -> "Journal":
        if self.work.exists() and not (self._stamp.is_file() and self._stamp.read_text() == self._expected):
            log.info("%s: inputs, params or code changed since the interrupted run; starting afresh", self.out)
            self._discard()
        if self.work.exists():
            log.info("%s: resuming the interrupted run in %s (%d units done)", self.out, self.work,
                     len(list(self.state.glob("unit-*.json"))))
        else:
            self.state.mkdir(parents=True)
            self._stamp.write_text(self._expected)
        return self

    def record(self, unit: str) -> dict | None:
        """The record of a unit finished by this run or an interrupted one, else None."""
        path = self.state / f"unit-{unit}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def done(self, unit: str, record: dict) -> None:
        """Mark a unit finished; call it after the unit's files are complete (a kill between the two redoes the
        unit). Writing a record again replaces it."""
        write_json(self.state / f"unit-{unit}.json", record)

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if kind is None:
            self._stamp.unlink()  # first: a kill while the rest is removed must not leave a resumable-looking folder
            shutil.rmtree(self.state)
            for leftover in self.work.rglob("*.tmp"):
                leftover.unlink()
            replace_dir(self.out, self.work)
        elif issubclass(kind, PipelineError) and not issubclass(kind, RetryableError):
            self._discard()

    def _discard(self) -> None:
        self._stamp.unlink(missing_ok=True)  # first, for the same reason
        shutil.rmtree(self.work, ignore_errors=True)
