"""A thread beside a request that carries the request's context variables, so the lines it
logs (a delivery that goes on after the answer) keep the request's id."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable


def start_beside(target: Callable[[], None], name: str) -> threading.Thread:
    """Start `target` in a daemon thread named `name`, in a copy of this thread's context."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name=name, daemon=True)
    thread.start()
    return thread
