"""Ending the `handoff` process without tearing its objects down, for a command that asks.

A population backtest ends holding millions of objects (the replayed visits, the report's
text). After its report was written, the interpreter freed them one by one and ran the
garbage collector over them once more: about 4 seconds at 100k patients, 5% of the run,
spent after the work was done. A command that holds such a result calls :func:`request`
once its output is written; `smartapp.cli.main` then flushes the standard streams and ends
the process with its exit status at once (`os._exit`, as mypy's command line does), skipping
that teardown. Nothing else is skipped that the command needs: its temporary files are gone
and its worker processes joined before it returns; `atexit` handlers do not run (Handoff
registers none for a command line run). Only the console script acts on the request: a
command invoked in-process (tests, click's runner) returns as usual.
"""

from __future__ import annotations

import os
import sys

_requested = [False]


def request() -> None:
    """Ask for the process to end without teardown once the command returns."""
    _requested[0] = True


def clear() -> None:
    """Forget a request (the console script starts with none)."""
    _requested[0] = False


def requested() -> bool:
    return _requested[0]


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
