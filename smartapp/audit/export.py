"""Export of the referral log: FHIR R4 AuditEvent (NDJSON) following IHE BALP, or CSV.

Each log event becomes one AuditEvent (`smartapp.audit.auditevent`: the mapping, with its
tables); a proven row's line is made fast from a format per event type
(`smartapp.audit.exportlines`), the same bytes.

CSV: one row per event: seq, time, type, user, iss, patient, encounter, prev_hash, hash, data
(canonical JSON). Enough to recompute every hash (`csv_records`). Cells are not escaped against
spreadsheet formulas: the export is evidence and stays byte-faithful.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TextIO

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.auditevent import (  # noqa: F401 (audit_event re-exported)
    audit_event,
    log_entry,
)
from smartapp.audit.canonical import (
    format_time,
)
from smartapp.audit.csvform import (
    CSV_COLUMNS,
    csv_records,  # noqa: F401 (re-exported: the CSV read back)
    csv_row,
    fast_csv_line,
)
from smartapp.audit.exportlines import _FastLines
from smartapp.audit.fastrows import in_range, proven, rows
from smartapp.audit.log import append
from smartapp.audit.models import LogEvent
from smartapp.db import Database

# -- files ------------------------------------------------------------------------------------

#: A block of lines handed to the sink: made here, or a worker's part mapped from its file.
Block = bytes | bytearray | mmap.mmap


@dataclass(frozen=True)
class ExportResult:
    events: int
    first_seq: int | None
    last_seq: int | None
    sha256: str
    # Events in range that could not be read (damaged rows): left out, named here and in the
    # export's log entry; `handoff audit verify` names the first of them.
    broken: tuple[int, ...] = ()


def select_events(
    session: Session,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]] = (),
):
    """Events with start <= time < end (and the `where` conditions), in chain order, read row
    by row (`smartapp.audit.rows`) so that a damaged one comes back marked instead of raising."""
    query = stored.select_events(*in_range(start, end, where)).order_by(LogEvent.seq)
    return stored.read(session, query)


def write_export(
    session: Session,
    out: TextIO,
    fmt: str,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]] = (),
    keep: Callable[[Any], bool] | None = None,
) -> ExportResult:
    """Write the events in range to `out` as ndjson or csv; returns count and the sha256.

    `where` (SQL conditions) and `keep` (a test on each event, for what SQL cannot say) narrow
    the export to what a search found; without them it is every event in the range.
    """
    if fmt not in ("ndjson", "csv"):
        raise ValueError(f"unknown export format {fmt!r}")
    lines = _Lines(out, fmt)
    try:
        if keep is None:
            lines.add_all(session, rows(session, start, end, where))
        else:
            for event in select_events(session, start, end, where):
                if event.broken:
                    lines.broken.append(event.seq)
                elif keep(event):
                    lines.add(event)
    except BaseException:
        lines.abandon()
        raise
    return lines.close()


class _Lines:
    """The export being written: one line per event as UTF-8, gathered in a block of a few
    megabytes and handed on whole (`_Sink`: hashed and written beside the making of the next
    lines); memory stays flat whatever the log's size."""

    # Large enough that the writing thread takes the GIL back (after hashing, after writing)
    # seldom: at 1 MB it waited for it more than it worked and the lines waited for it, at 4 MB
    # still now and then. Three blocks at most are held (one made, one waiting, one written).
    BLOCK = 8 << 20

    def __init__(self, out: TextIO | None, fmt: str, sink: Any = None) -> None:
        """`sink`: where the blocks go instead of a `_Sink` to `out` (an object with `put`
        and `close`: a part of an export made by a worker process, `export_jobs`), then
        without the CSV header."""
        self.fmt = fmt
        if sink is None:
            assert out is not None  # an export's own lines go to its output
            sink = _Sink(out)
        self.sink = sink
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self.broken: list[int] = []
        self.block = bytearray()
        if fmt == "csv" and out is not None:
            self.block += _csv_text(CSV_COLUMNS).encode()

    def add(self, event: Any) -> None:
        """An event read the exact way (a `StoredEvent`, not damaged)."""
        self.block += self.exact_line(event)
        self.count += 1
        if self.first is None:
            self.first = event.seq
        self.last = event.seq
        if len(self.block) > self.BLOCK:
            self._flush()

    def exact_line(self, event: Any) -> bytes:
        """The line of an event read the exact way (a `StoredEvent`, not damaged)."""
        if self.fmt == "csv":
            return _csv_text(csv_row(event)).encode()
        resource = audit_event(event)
        return (json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def add_all(self, session: Session, raws: Iterator[Any]) -> None:
        """Every row of `raws` (`fastrows.rows`): one that proves itself made into its line
        the fast way; any other read again the exact way (`rows`), left out if damaged."""
        line_of = _FastLines().row_line if self.fmt == "ndjson" else _csv_line
        block, count, first, last = self.block, self.count, self.first, self.last
        put, size = self.sink.put, self.BLOCK
        for raw in raws:
            line = line_of(raw)
            if line is None:
                event = stored.get(session, raw[0])
                if event is None:
                    continue
                if event.broken:
                    self.broken.append(event.seq)
                    continue
                line = self.exact_line(event)
            block += line
            count += 1
            last = raw[0]
            if first is None:
                first = last
            if len(block) > size:
                put(block)
                block = bytearray()
        self.block, self.count, self.first, self.last = block, count, first, last

    def _flush(self) -> None:
        self.sink.put(self.block)
        self.block = bytearray()

    def add_part(self, block: Block, count: int, first: int | None, last: int | None) -> None:
        """A part of the export made elsewhere (`export_jobs`), its lines in chain order after
        those added so far: `count` events, `first` to `last`."""
        if self.block:
            self._flush()
        self.sink.put(block)
        self.count += count
        if first is not None:
            if self.first is None:
                self.first = first
            self.last = last

    def close(self) -> ExportResult:
        self._flush()
        digest = self.sink.close()
        return ExportResult(self.count, self.first, self.last, digest, tuple(self.broken))

    def abandon(self) -> None:
        """Stop the sink's thread (the export failed)."""
        self.sink.close(raising=False)


class _Sink:
    """Where the export's blocks go: SHA-256 over them and written to `out`, each by a thread
    of its own (hashing and file writes let go of the GIL, so they run beside the making of
    the next lines and beside each other: where the disk is slow, the writes alone bound the
    export, not the writes and the hashing one after the other; few blocks wait, so memory
    stays at a few blocks).

    To a UTF-8 text file (`io.TextIOWrapper`, where lines end in "\\n": not Windows) the bytes
    go to its binary buffer as they are, unencoded and undecoded; to anything else as text.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.binary = _binary_buffer(out)
        if self.binary is not None:
            out.flush()  # what the caller wrote first goes first
        self.digest = hashlib.sha256()
        self.blocks: queue.Queue[Block | None] = queue.Queue(maxsize=1)  # to be written
        self.unhashed: queue.Queue[Block | None] = queue.Queue(maxsize=2)  # to be hashed
        self.error: BaseException | None = None
        self.threads = [
            threading.Thread(target=self._write, name="audit-export-sink", daemon=True),
            threading.Thread(target=self._hash, name="audit-export-hash", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def put(self, block: Block) -> None:
        if self.error is not None:
            raise self.error
        self.unhashed.put(block)
        self.blocks.put(block)

    def _write(self) -> None:
        while (block := self.blocks.get()) is not None:
            if self.error is not None:
                continue  # drained, so that `put` never blocks for ever
            try:
                if self.binary is not None:
                    self.binary.write(block)
                else:
                    self.out.write(str(block, "utf-8"))
            except BaseException as exc:  # handed to the exporting thread
                self.error = exc

    def _hash(self) -> None:
        """The blocks in the order they were put (one thread: SHA-256 is sequential)."""
        while (block := self.unhashed.get()) is not None:
            self.digest.update(block)

    def close(self, raising: bool = True) -> str:
        """Wait for the blocks to be written; the SHA-256 of everything written."""
        self.unhashed.put(None)
        self.blocks.put(None)
        for thread in self.threads:
            thread.join()
        if self.error is not None and raising:
            raise self.error
        return self.digest.hexdigest()


def _binary_buffer(out: TextIO) -> BinaryIO | None:
    """The binary buffer under `out` where writing UTF-8 bytes there is writing the text."""
    if not isinstance(out, io.TextIOWrapper) or os.linesep != "\n":
        return None
    try:
        utf8 = codecs.lookup(out.encoding).name == "utf-8"
    except LookupError:
        return None
    return out.buffer if utf8 else None


def _csv_line(raw: Any) -> bytes | None:
    """The CSV line of a row that proves itself (`fastrows.proven`), else None."""
    fast = proven(raw)
    return None if fast is None else fast_csv_line(raw, fast)


def _csv_text(cells: Sequence[str]) -> str:
    """One CSV row as the csv module writes it."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue()


def write_export_of(
    db: Database,
    out: TextIO,
    fmt: str,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]] = (),
    keep: Callable[[Any], bool] | None = None,
    jobs: int = 1,
) -> ExportResult:
    """`write_export` on `db`, not logged; `jobs` > 1: made by that many worker processes
    (`export_jobs`; not with `keep`)."""
    if jobs > 1 and keep is None:
        from smartapp.audit.export_jobs import write_export_jobs

        return write_export_jobs(db, out, fmt, start, end, where, jobs)
    with db.session() as session:
        return write_export(session, out, fmt, start, end, where, keep)


def export(
    db: Database,
    out: TextIO,
    *,
    fmt: str,
    start: datetime | None,
    end: datetime | None,
    user: str,
    destination: str = "-",
    where: Sequence[ColumnElement[bool]] = (),
    keep: Callable[[Any], bool] | None = None,
    filter_description: str | None = None,
    jobs: int = 1,
) -> ExportResult:
    """Export, then log the export itself (who, what range and filter, how many, the output's
    sha256). `where`, `keep`: see `write_export`; `filter_description` says them in words.
    `jobs`: see `write_export_of`."""
    result = write_export_of(db, out, fmt, start, end, where, keep, jobs)
    data: dict[str, Any] = {
        "from": format_time(start) if start else None,
        "to": format_time(end) if end else None,
        "format": fmt,
        "events": result.events,
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
        "sha256": result.sha256,
        "out": destination,
    }
    if filter_description:
        data["filter"] = filter_description
    if result.broken:
        data["broken"] = list(result.broken)
    with db.session() as session:
        append(session, "audit-export", user_ref=user, data=data)
    return result
