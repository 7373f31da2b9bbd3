"""Worker processes for the data stages: a bounded, ordered pool that stops at once.

Each worker is forked with the state its tasks need (language models, evaluation n-grams: shared copy-on-write,
never pickled) and runs `work(state, task)` for each task it is sent. Results come back in task order, with at
most `per_worker` tasks given to each worker and not yet taken back, so memory stays bounded however many
tasks there are.

Why not multiprocessing.Pool: its workers share queue locks, and a worker killed while holding one (Ctrl-C
reaches the whole process group) leaves `join` or `terminate` waiting forever; a worker that dies (out of
memory) leaves its task pending forever. Here every worker has pipes of its own: Ctrl-C and SIGTERM are
handled by the stage's process alone (workers ignore SIGINT), which kills the workers and returns; a worker
that dies is reported as an error.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from pipeline.errors import PipelineError


class WorkerError(Exception):
    """An unexpected error in a worker, with the worker's traceback as text."""


STOPS = (signal.SIGINT, signal.SIGTERM)


def _serve(connection, work: Callable[[Any, Any], Any], state: Any, others: list) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stage's process decides what Ctrl-C means
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # and a SIGTERM to all just ends a worker, silently
    for other in others:  # the stage's ends of the pipes, inherited by the fork: once the stage's process is
        other.close()  # gone (even by kill -9), nothing holds them, and recv() below ends this worker
    while True:
        try:
            task = connection.recv()
        except EOFError:  # the stage's process is gone or done
            return
        try:
            result = ("ok", work(state, task))
        except PipelineError as exc:  # bad input: reaches the stage as the same one-line error
            result = ("error", exc)
        except Exception:  # noqa: BLE001 - anything else is a bug: its traceback goes with it
            result = ("bug", traceback.format_exc())
        connection.send(result)


class WorkerPool:
    """`with WorkerPool(work, state, workers) as pool: for result in pool.map(tasks): ...`"""

    def __init__(self, work: Callable[[Any, Any], Any], state: Any, workers: int, per_worker: int = 2):
        context = multiprocessing.get_context("fork")
        self.per_worker = per_worker
        self._connections, self._processes = [], []
        # A stop during a fork, before the new worker is in self._processes, would leave it running unseen (and
        # holding the stage's output pipe): stops are held back while the workers start, then acted on.
        held: list[int] = []
        previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in STOPS}
        try:
            for _ in range(max(1, workers)):
                parent, child = context.Pipe()
                others = [*self._connections, parent]
                process = context.Process(target=_serve, args=(child, work, state, others), daemon=True)
                process.start()
                child.close()
                self._connections.append(parent)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if held:
            self.close()
            signal.raise_signal(held[0])  # the stage's own handler: KeyboardInterrupt, or Stopped for SIGTERM

    def map(self, tasks: Iterable) -> Iterator:
        """Each task's result, in task order."""
        tasks = iter(tasks)
        pending: deque[int] = deque()  # the worker of each task given out, oldest first

        def give(worker: int) -> bool:
            task = next(tasks, _END)
            if task is _END:
                return False
            try:
                self._connections[worker].send(task)
            except OSError:  # the worker is gone: said as when its answer is missing
                self._died(worker)
            pending.append(worker)
            return True

        for _ in range(self.per_worker):
            for worker in range(len(self._connections)):
                give(worker)
        while pending:
            worker = pending.popleft()  # a worker answers in the order it was given tasks
            yield self._receive(worker)
            give(worker)

    def _receive(self, worker: int):
        try:
            kind, value = self._connections[worker].recv()
        except EOFError:
            self._died(worker)
        if kind == "error":
            raise value
        if kind == "bug":
            raise WorkerError(value)
        return value

    def _died(self, worker: int) -> None:
        process = self._processes[worker]
        process.join(timeout=5)
        code = process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        raise PipelineError(f"a worker process died ({how}){hint}; work done so far is kept: run the stage "
                            "again to continue") from None

    def close(self) -> None:
        """Stop every worker now: tasks in flight are abandoned (the stage redoes them when resumed)."""
        for process in self._processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
        for process in self._processes:
            process.join()
        for connection in self._connections:
            connection.close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_END = object()
