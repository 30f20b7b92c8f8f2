"""Threads kept for the life of the process, for work a request does beside its own thread
(read the chart while the coach team's caseload is counted; record what was shown while the
page renders; answer a CDS call within its budget).

Starting a thread per request costs about a millisecond of a screen's time and churns under
load; a pool per process and name is made once. Made again after a fork: a pool's threads do
not survive it (gunicorn forks its workers after the app is imported). Work submitted runs in
a copy of the caller's context variables, so what it logs keeps the request's id.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: Threads per pool, started as needed: one per request doing that work at once (more than a
#: worker's request threads), beyond which the work waits its turn.
SIZE = 16

_POOLS: dict[tuple[int, str], ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def pool(name: str) -> ThreadPoolExecutor:
    """This process's pool called `name`."""
    key = (os.getpid(), name)
    found = _POOLS.get(key)
    if found is None:
        with _LOCK:
            found = _POOLS.get(key)
            if found is None:
                found = _POOLS[key] = ThreadPoolExecutor(SIZE, thread_name_prefix=name)
    return found


def beside(name: str, work: Callable[..., T], *args: Any) -> Future[T]:
    """Run `work(*args)` in the pool `name`, in a copy of the caller's context variables."""
    context = contextvars.copy_context()
    return pool(name).submit(context.run, work, *args)
