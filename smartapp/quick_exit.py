"""Ending the `handoff` process without tearing its objects down, for a command that asks.

A population backtest ends holding millions of objects (the replayed visits, the report's
text). After its report was written, the interpreter freed them one by one and ran the
garbage collector over them once more: about 4 seconds at 100k patients, 5% of the run,
spent after the work was done. A command that holds such a result calls :func:`request`
once its output is written; the console script (`smartapp.cli.main`, through :func:`run`)
then flushes the standard streams and ends the process with the command's exit status at
once (`os._exit`, as mypy's command line does), skipping that teardown. Nothing is skipped
that the command needs: its temporary files are removed and its worker processes joined
before it returns, and the `atexit` handlers a backtest has (logging's, multiprocessing's)
have nothing left to do once the streams are flushed. A command invoked in-process (tests,
click's runner) returns as usual.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

_requested = [False]


def request() -> None:
    """Ask for the process to end without teardown once the command returns."""
    _requested[0] = True


def leave(status: object) -> None:
    """End the process now with `status` (as `SystemExit` carries it), its standard streams
    flushed; returns instead when they cannot be (a closed pipe): the caller exits as usual,
    and Python reports it as it does."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    code = status if isinstance(status, int) else (0 if status is None else 1)
    os._exit(code)


def run(command: Callable[[], object]) -> None:
    """Run the console script's `command` (click's, which ends with SystemExit, success
    too); on a request, leave without teardown with its status."""
    _requested[0] = False  # an earlier command's request (in this process) is not this one's
    try:
        command()
    except SystemExit as exc:
        if _requested[0]:
            leave(exc.code)
        raise
