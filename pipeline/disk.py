"""Preflight for disk space: a stage that is about to write many gigabytes checks that they fit first, so a
pod stops with a clear message now instead of "No space left on device" hours in."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import PipelineError

# room the system and the other stages' small files need besides the estimate
MARGIN_BYTES = 1 << 30


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def require_free(directory: Path | str, needed_bytes: float, what: str, partial: Path | None = None) -> None:
    """Raise a one-line PipelineError naming `what` when `directory`'s file system has less free space than
    `needed_bytes` plus a margin. `partial`: the output whose interrupted run (pipeline.journal)
    has already written part of it, which is not needed again."""
    if partial is not None:
        needed_bytes -= tree_bytes(partial.with_name(f".{partial.name}.partial"))
    directory = Path(directory).resolve()
    while not directory.exists():
        directory = directory.parent
    free = shutil.disk_usage(directory).free
    if needed_bytes + MARGIN_BYTES > free:
        raise PipelineError(
            f"{what}: needs about {(needed_bytes + MARGIN_BYTES) / 2**30:.1f} GiB free on {directory}, "
            f"{free / 2**30:.1f} GiB free; free some space or mount a larger volume"
        )
