"""The backtest's worker processes: forked workers that take the next task from a shared
counter and send each outcome back on their own pipe.

Why not ``multiprocessing.Pool``: its three handler threads cost the parent about a
millisecond of CPU a task (a tenth of the work on the Synthea folder), on the very cores
the workers need; here the parent only waits on the pipes. Forked workers inherit what the
tasks read (packs, NDJSON groups), so nothing is pickled but the outcomes.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WorkerFailed(RuntimeError):
    """A worker process ended without sending every outcome (killed, out of memory)."""


def fork_available() -> bool:
    """Whether workers can be forked (Linux; not macOS, where fork is unsafe)."""
    import sys

    return "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"


def run_forked(
    tasks: Sequence[T],
    work: Callable[[T], R],
    workers: int,
    progress: Callable[[int], None] | None = None,
) -> list[R]:
    """``work(task)`` for every task on ``workers`` forked processes, in the order they end.

    The first exception a task raises is raised here (the other workers are stopped).
    """
    ctx = multiprocessing.get_context("fork")
    counter = ctx.RawValue("i", 0)
    lock = ctx.Lock()
    conns: list[Connection] = []
    procs = []
    for _ in range(workers):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_serve, args=(tasks, work, counter, lock, send), daemon=True)
        proc.start()
        send.close()
        conns.append(receive)
        procs.append(proc)
    outcomes: list[R] = []
    failed = True
    try:
        pending = list(conns)
        while pending:
            for conn in wait(pending):
                assert isinstance(conn, Connection)
                try:
                    kind, value = conn.recv()
                except EOFError:
                    pending.remove(conn)
                    continue
                if kind == "error":
                    raise value
                outcomes.append(value)
                if progress:
                    progress(1)
        if len(outcomes) != len(tasks):
            raise WorkerFailed(f"a worker ended early: {len(tasks) - len(outcomes)} tasks lost")
        failed = False
    finally:
        for proc in procs:
            if failed and proc.is_alive():
                proc.terminate()
            proc.join()
        for conn in conns:
            conn.close()
    return outcomes


def _serve(
    tasks: Sequence[Any],
    work: Callable[[Any], Any],
    counter: Any,
    lock: Any,
    conn: Connection,
) -> None:
    """A worker: the next task by the shared counter until none is left. The collector
    stays off (parsed FHIR is acyclic; each task's data is freed when it ends)."""
    gc.disable()
    try:
        while True:
            with lock:
                index = counter.value
                counter.value = index + 1
            if index >= len(tasks):
                return
            conn.send(("ok", work(tasks[index])))
    except BaseException as exc:  # the parent raises it
        try:
            conn.send(("error", exc))
        except Exception:  # not picklable: its words
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()
