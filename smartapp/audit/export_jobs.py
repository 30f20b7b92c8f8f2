"""The export made by several processes (`handoff audit export --jobs N`; by default every
core, up to 4).

The events in range are cut into parts of consecutive sequence numbers; worker processes
(forked: they read the log with their own connections) each make a part's lines as the
single-process export makes them (`export._Lines`: proven rows the fast way, the others the
exact way, damaged ones left out and named), and this process writes the parts in chain order,
hashing them as it goes (`export._Sink`). The same bytes and the same result as the export in
one process (tests pin it); memory holds a few parts (`PART_EVENTS` each), whatever the log's
size. The log is append-only, so the parts' rows are those the range held when the export
began: events appended meanwhile come after its last sequence number and are not in it.

The parts go from the workers to this process as files in shared memory (`_parts_folder`),
mapped, not pickled through a pipe: pickling a part's 34 MB cost this process more than
writing it. Only for the command line: a web request never forks (the console's export stays
in its process).
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import ColumnElement, func, select

from smartapp.audit.export import ExportResult, _Lines, write_export_of
from smartapp.audit.fastrows import in_range, rows
from smartapp.audit.models import LogEvent
from smartapp.db import Database

#: Events per part: a part's lines (about 3.4 kB an event as NDJSON) are held in memory by
#: its worker and by this process until written.
PART_EVENTS = 10_000

#: Parts a worker must have to pay for itself; with fewer, fewer workers (one: this process
#: alone, no fork). Forking, each worker's own connection, this process waiting for the first
#: part and the workers waiting while it writes the last cost about 0.3 s, which a small
#: export does not win back (benchmarks/scale.py, 2 cores, SQLite, as ratios to the floor:
#: 100k events 3.03x by two workers, 2.55x alone; 1M events 2.52x by two, 2.98x alone).
MIN_PARTS_PER_JOB = 10

# What the workers export, set before they are forked (inherited, never pickled: the `where`
# conditions are SQL expressions).
_JOB: dict[str, Any] = {}


#: Workers by default at most: beyond a few, the one process that hashes and writes the
#: parts is the bottleneck, and each worker holds a connection to the database.
MAX_DEFAULT_JOBS = 4


def default_jobs() -> int:
    """Every core this process may run on, up to MAX_DEFAULT_JOBS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_JOBS))


def workers_for(events: int, jobs: int) -> int:
    """The processes an export of a range of `events` sequence numbers is made by, of at most
    `jobs`: as many as have MIN_PARTS_PER_JOB parts each; 1 is this process alone."""
    parts = -(-events // PART_EVENTS)
    return max(1, min(jobs, parts // MIN_PARTS_PER_JOB))


def write_export_jobs(
    db: Database,
    out: TextIO,
    fmt: str,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]] = (),
    jobs: int = 2,
) -> ExportResult:
    """`export.write_export` (without `keep`) made by up to `jobs` worker processes: as many as
    have `MIN_PARTS_PER_JOB` parts each, or this process alone."""
    if fmt not in ("ndjson", "csv"):
        raise ValueError(f"unknown export format {fmt!r}")
    span = select(func.min(LogEvent.seq), func.max(LogEvent.seq))
    span = span.where(*in_range(start, end, where))
    with db.engine.connect() as connection:
        low, high = connection.execute(span).one()
    if low is None:
        return _Lines(out, fmt).close()
    jobs = workers_for(high - low + 1, jobs)
    if jobs == 1:
        return write_export_of(db, out, fmt, start, end, where)
    starts = range(low, high + 1, PART_EVENTS)
    parts = [(first, min(first + PART_EVENTS, high + 1)) for first in starts]
    _JOB.update(url=db.url, engine=db.engine, fmt=fmt, where=tuple(where), start=start, end=end)
    context = multiprocessing.get_context("fork")
    with (
        tempfile.TemporaryDirectory(prefix="handoff-export-", dir=_parts_folder(jobs)) as folder,
        ProcessPoolExecutor(jobs, mp_context=context, initializer=_forked) as pool,
    ):
        _JOB["folder"] = folder
        waiting: deque[Future] = deque(pool.submit(_part, part) for part in parts[:jobs])
        # Made once the workers are forked: a forked process must not inherit its thread.
        lines = _Lines(out, fmt)
        try:
            for part in parts[jobs:]:
                waiting.append(pool.submit(_part, part))
                _write(lines, waiting.popleft().result())
            while waiting:
                _write(lines, waiting.popleft().result())
        except BaseException:
            lines.abandon()
            for future in waiting:
                future.cancel()
            raise
    return lines.close()


#: Bytes a part may take at most, to decide whether shared memory can hold the parts that
#: wait at once: about 3.4 kB an NDJSON line (CSV less), with room for long data.
PART_BYTES = PART_EVENTS * 8 * 1024
SHARED_MEMORY = "/dev/shm"


def _parts_folder(jobs: int) -> str | None:
    """Where the parts wait: shared memory where there is room for every part that may wait
    at once (one per worker, one queued per worker, one being written: on Linux the parts
    then never touch the disk, which the export's own file keeps busy; a container's
    /dev/shm is often 64 MB, too small), else the temporary folder. A folder of this user's
    only (0700), emptied and removed after the export."""
    try:
        found = os.statvfs(SHARED_MEMORY)
    except OSError:  # none here (not Linux)
        return None
    room = found.f_bavail * found.f_frsize
    enough = room >= (2 * jobs + 1) * PART_BYTES and os.access(SHARED_MEMORY, os.W_OK)
    return SHARED_MEMORY if enough else None


def _write(lines: _Lines, made: tuple[str, int, int | None, int | None, list[int]]) -> None:
    """A worker's part into the export: its file's bytes (mapped, not copied into this
    process: hashed and written by the export's sink), then the file removed."""
    path, count, first, last, broken = made
    try:
        with open(path, "rb") as part:
            size = os.fstat(part.fileno()).st_size
            block = mmap.mmap(part.fileno(), size, access=mmap.ACCESS_READ) if size else b""
        lines.add_part(block, count, first, last)
        lines.broken.extend(broken)
    finally:
        os.unlink(path)


class _PartFile:
    """A worker's sink: the part's blocks written to a file of its own (a part's lines go
    back to the exporting process through the page cache, not pickled through a pipe)."""

    def __init__(self, folder: str) -> None:
        descriptor, self.path = tempfile.mkstemp(prefix="part-", dir=folder)
        self.file = os.fdopen(descriptor, "wb")

    def put(self, block: bytes | bytearray) -> None:
        self.file.write(block)

    def close(self, raising: bool = True) -> str:
        self.file.close()
        return self.path


def _forked() -> None:
    """In a new worker: the parent's pooled connections are left to the parent (not closed:
    closing a PostgreSQL connection here would end the parent's session); its own come from
    an engine of its own."""
    _JOB["engine"].dispose(close=False)
    _JOB["db"] = Database(_JOB["url"])


def _part(bounds: tuple[int, int]) -> tuple[str, int, int | None, int | None, list[int]]:
    """The lines of the events with first <= seq < stop in range: (the file holding them,
    how many, first seq, last seq, damaged seqs left out)."""
    first, stop = bounds
    sink = _PartFile(_JOB["folder"])
    try:
        lines = _Lines(None, _JOB["fmt"], sink=sink)
        where = [*_JOB["where"], LogEvent.seq >= first, LogEvent.seq < stop]
        with _JOB["db"].session() as session:
            lines.add_all(session, rows(session, _JOB["start"], _JOB["end"], where))
        lines._flush()
    except BaseException:
        sink.close()
        os.unlink(sink.path)
        raise
    return sink.close(), lines.count, lines.first, lines.last, lines.broken
