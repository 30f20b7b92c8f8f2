"""Group commit for the CDS Hooks calls' writes (the JWT id, what a card showed and its log
entry): one thread per process and database takes every unit of work queued meanwhile and
commits them in one transaction, so calls arriving together share one commit (one fsync, one
turn at the database's write lock) instead of queueing for a commit each. A caller still waits
for its own commit: nothing is answered before it is stored. Should the batch fail (a replayed
JWT id refused by the primary key), each unit is committed alone, and only its own error
reaches its caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from smartapp.db import Database

log = logging.getLogger("handoff.cdshooks.writer")

MAX_BATCH = 64
WAIT_SECONDS = 30.0


@dataclass
class _Unit:
    work: Callable[[Session], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class GroupWriter:
    """Commits queued units of work together, in the order they came."""

    def __init__(self, db: Database, context: Callable[[], Any] | None = None) -> None:
        self.db = db
        # A context every batch runs in (the app's: the referral log finds the checkpoint
        # signer there, as in a request), given by whoever made the writer.
        self.context = context or contextlib.nullcontext
        self._queue: queue.Queue[_Unit] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="cds-writer", daemon=True)
        self._thread.start()

    def run(self, work: Callable[[Session], Any]) -> Any:
        """Run `work(session)` in the next batch and wait for its commit; its result, or
        its own error raised here."""
        unit = _Unit(work)
        self._queue.put(unit)
        if not unit.done.wait(WAIT_SECONDS):
            raise TimeoutError("the database did not take the write in time")
        if unit.error is not None:
            raise unit.error
        return unit.result

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self.context():
                self._commit(batch)

    def _commit(self, batch: list[_Unit]) -> None:
        try:
            with self.db.session() as session:
                for unit in batch:
                    unit.result = unit.work(session)
        except BaseException as exc:
            if len(batch) == 1:  # its own error: handed to the caller, who decides
                batch[0].error = exc
                batch[0].done.set()
                return
            for unit in batch:  # one at a time: each caller gets its own outcome
                self._alone(unit)
            return
        for unit in batch:
            unit.done.set()

    def _alone(self, unit: _Unit) -> None:
        try:
            with self.db.session() as session:
                unit.result = unit.work(session)
        except BaseException as exc:  # handed to the caller, who decides
            unit.error = exc
        unit.done.set()


_WRITERS: dict[tuple[int, int], GroupWriter] = {}
_LOCK = threading.Lock()


def writer_for(db: Database, context: Callable[[], Any] | None = None) -> GroupWriter:
    """The process's group writer for this database (made on first use, with `context`)."""
    with _LOCK:  # keyed by process too: a writer's thread does not survive a fork
        key = (os.getpid(), id(db))
        found = _WRITERS.get(key)
        if found is None or not found._thread.is_alive():
            found = _WRITERS[key] = GroupWriter(db, context)
        return found
