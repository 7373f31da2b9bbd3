"""The pipeline's stages, each run as `python -m stages.<name>` (pipeline.stage.main).

Run that way, Ctrl-C or SIGTERM while a stage is still importing its libraries (a second or two, before
pipeline.stage.main takes over) ends it at once with one line instead of an import traceback: nothing has
started that would need cleaning up.
"""
import os
import signal
import sys


def _stop_at_once(signum, frame) -> None:
    os.write(2, b"error: interrupted while starting; nothing was changed\n")
    os._exit(128 + signum)


if sys.argv[:1] == ["-m"]:  # python -m stages.<name>: sys.argv[0] is "-m" while the package is imported
    signal.signal(signal.SIGINT, _stop_at_once)
    signal.signal(signal.SIGTERM, _stop_at_once)
