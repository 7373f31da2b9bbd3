"""The thin command line every stage shares: load params, run, turn known failures and stops into one line.

Ctrl-C (SIGINT) and a stopped pod or container (SIGTERM) end a stage within seconds, with exit code 130 or 143:
its finished units are kept where the stage resumes from (pipeline.journal, train's checkpoints) and its
outputs are left as they were.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Callable

from pipeline.errors import PipelineError
from pipeline.params import Params, load
from pipeline.paths import PARAMS


class Stopped(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same cleanup runs."""


def _stop(signum, frame) -> None:
    raise Stopped


def _ignore_stops() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def quiet_libraries() -> None:
    """Library warnings that say nothing to a user of the pipeline."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|torch|trl|peft|datasets)\b")


def _add_params_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=str(PARAMS), help=f"params file (default: {PARAMS})")


def params_path() -> str:
    """The --params of this command line, read before `main` parses it whole (train decides on a launch)."""
    parser = argparse.ArgumentParser(add_help=False)
    _add_params_option(parser)
    return parser.parse_known_args()[0].params


def main(run: Callable[..., dict], description: str, *arguments: str) -> None:
    """`arguments`: names of positional command-line arguments passed to `run` after the params."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    _add_params_option(parser)
    for name in arguments:
        parser.add_argument(name)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_libraries()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, whatever stages/ set at start
    signal.signal(signal.SIGTERM, _stop)
    try:
        run(load(args.params), *(getattr(args, name) for name in arguments))
        # Done: a stop from here on changes nothing. Ignored, not left to Python, whose shutdown restores the
        # default handlers, so a signal in the last milliseconds would end a finished stage by the signal
        _ignore_stops()
    except BaseException as exc:
        _ignore_stops()
        # a stop first, whatever carries it: a library may wrap it in its own error, or a source's reader in a
        # PipelineError about the file it was reading
        stop = _stop_within(exc)
        if stop is not None:
            what, code = ("stopped (SIGTERM)", 143) if isinstance(stop, Stopped) else ("interrupted", 130)
            print(f"error: {what}; outputs were left as they were, and finished work is kept: run the stage "
                  "again to resume", file=sys.stderr)
            leave(code)
        if isinstance(exc, PipelineError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        raise


def _stop_within(exc: BaseException) -> BaseException | None:
    """The stop that caused `exc`, if one did. A signal's handler can run inside a native library's call back
    into Python, and the library then reports the stop wrapped in its own error (numba: SystemError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, Stopped)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def leave(code: int) -> None:
    """Exit a stopped stage now. Its own cleanup ran while the stop unwound (worker pools, temporary
    directories). Python's shutdown would also finalise every library's objects, and a stopped filter can end
    there by the signal (exit -2) after its message instead of with its code: nothing is left to finish, so
    the shutdown is skipped."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)
