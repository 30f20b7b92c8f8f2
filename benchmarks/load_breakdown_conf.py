"""Handoff's gunicorn settings (smartapp.web.gunicorn_conf) plus, in each worker, the CPU time
of the threads that run a list of Handoff's steps, for `benchmarks/load_breakdown.py`.

Each step (``module:qualified.name``, from $HANDOFF_BREAKDOWN_STEPS) is wrapped once the app
is loaded: the calling thread's CPU time (time.thread_time) around each call is added to the
step, and so is the garbage collector's, from gc.callbacks. Counts start when the file named
by $HANDOFF_BREAKDOWN_START exists (after the warm-up); each worker writes its counts to
$HANDOFF_BREAKDOWN_OUT/<pid>.json as it exits. A step that calls another counts it too (the
steps nest); a step whose name is missing in this tree is reported, not fatal.
"""

from __future__ import annotations

import functools
import gc
import importlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.load_breakdown import OUT_ENV, START_ENV, STEPS_ENV
from smartapp.web import gunicorn_conf as base
from smartapp.web.gunicorn_conf import *  # noqa: F403 (every setting and hook, as in production)

GC_STEP = "gc (the garbage collector, in any thread)"

_counts: dict[str, list[float]] = {}  # step -> [calls, CPU seconds]
_missing: list[str] = []  # steps not found in this tree
_guard = threading.Lock()
_started = threading.Event()
_gc_began = threading.local()


def _counting() -> bool:
    if not _started.is_set() and Path(os.environ[START_ENV]).exists():
        with _guard:
            if not _started.is_set():
                _counts.clear()
                _started.set()
    return _started.is_set()


def _add(step: str, seconds: float) -> None:
    with _guard:
        found = _counts.setdefault(step, [0, 0.0])
        found[0] += 1
        found[1] += seconds


def _timed(step: str, function: Any) -> Any:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if not _counting():
            return function(*args, **kwargs)
        began = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            _add(step, time.thread_time() - began)

    return timed


def _gc_timed(phase: str, _info: dict) -> None:
    if phase == "start":
        _gc_began.at = time.thread_time()
    elif getattr(_gc_began, "at", None) is not None and _started.is_set():
        _add(GC_STEP, time.thread_time() - _gc_began.at)
        _gc_began.at = None


def _wrap(step: str) -> None:
    module_name, _, qualified = step.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualified.split(".")
    for part in path:
        owner = getattr(owner, part)
    if not hasattr(owner, name):
        _missing.append(step)
        return
    setattr(owner, name, _timed(step, getattr(owner, name)))


def post_worker_init(worker) -> None:
    base.post_worker_init(worker)
    for step in filter(None, os.environ.get(STEPS_ENV, "").split(",")):
        _wrap(step)
    gc.callbacks.append(_gc_timed)


def worker_exit(server, worker) -> None:
    with _guard:
        found = {"counts": dict(_counts), "missing": _missing}
    (Path(os.environ[OUT_ENV]) / f"{os.getpid()}.json").write_text(json.dumps(found))
