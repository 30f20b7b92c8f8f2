"""A population's NDJSON grouped by patient without holding it in memory or copying it.

A bulk export (``$export``: one file per resource type, each holding every patient's
resources of that type) is grouped by patient in two passes, each on the backtest's
workers, so that every line is parsed once:

1. **index** (one task per chunk of about CHUNK_BYTES of a file): each line's patient is
   read from its first ``"subject":{"reference":"..."}`` (else ``"patient"``) without
   parsing the line, a hint, and the lines after it that name the same patient join it
   in a run; a line without a hint (a Patient, a Medication, JSON written with spaces) is
   parsed there. Each run's place (offset, length) goes to its patient's bucket, in the
   chunk's index file; the NDJSON itself is not copied (a gzip file is unpacked once to
   a temporary file, which has offsets), nor its lines counted.
2. **replay** (one task per bucket, a set of patients small enough to hold): the bucket's
   lines are read at their offsets, parsed and checked, and grouped by the patient
   ``patient_of`` gives, in the order of the files and lines they came from, as
   ``split_by_patient`` groups them, so the charts and the report are the in-memory ones.
   Each resource is named ``file:@offset`` (as on Spark: counting lines would cost a pass
   of its own); an error's message names ``file:line`` (:func:`numbered`). Pass 2 lives
   in ``backtest_bucket``, which reads each patient's lines straight into its chart.

A hint is checked against the parsed line: a line whose patient is not one of its
bucket's (a hint that was wrong, say a ``subject`` inside a contained resource, or a run
that held another patient's line) raises :class:`Misplaced`, and the backtest indexes
again, line by line (``LINES``), then parsing every line (``EXACT``). A
malformed line raises where it is found; the caller then names the first one in the
order of the files (:func:`first_error`), as the in-memory reading would.

Medications about no patient go to every patient's chart (orders may reference them), as
in ``split_by_patient``; they are kept in memory (a formulary, not a population). When no
resource at all is about a patient, everything is one group, as there (read in memory).
"""

from __future__ import annotations

import gzip
import mmap
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartapp.engine.chart import ChartError, ChartItem
from smartapp.engine.fhir import type_id_of
from smartapp.engine.history import patient_of
from smartapp.rulestools.backtest_files import (
    first_error,
    gzipped,
    input_bytes,
    mapped_file,
)
from smartapp.rulestools.backtest_input import (
    BacktestError,
    ndjson_resource,
)

#: NDJSON (bytes on disk, gzip counted as GZIP_RATIO times its size) read in memory at once;
#: above it, the two passes, with buckets of about BUCKET_BYTES (from a few MB on, faster:
#: on 26 MB, a third of the CPU time, every line parsed once, on every worker).
IN_MEMORY_BYTES = 8 * 1024 * 1024
BUCKET_BYTES = 32 * 1024 * 1024
CHUNK_BYTES = 32 * 1024 * 1024  # of a file, per indexing task
#: Buckets at least (tasks to share among the workers) and at most (each indexing task
#: writes an index slice for each).
MIN_BUCKETS = 16
MAX_BUCKETS = 4000
#: How a line names its patient, as bulk exports write it (compact JSON, reference first).
SUBJECT = b'"subject":{"reference":"'
PATIENT = b'"patient":{"reference":"'
#: An index entry, a run of lines: offset, length (without the last newline), patient's tag.
ENTRY = 3
#: Bytes a run of lines naming the same patient is first searched for its hint (then, in
#: each chunk, the length of the run before: a file's runs are alike), doubled while the
#: run reaches the window's end.
RUN_PROBE_BYTES = 16 * 1024
RUN_MIN_BYTES = 2 * 1024
#: How pass 1 finds each line's patient: hints, runs of lines taken by their last line's
#: hint; hints, line by line; every line parsed. Each is tried when the one before was
#: found wrong (Misplaced).
RUNS, LINES, EXACT = 0, 1, 2
ENTRY_BYTES = ENTRY * array("q").itemsize


class Misplaced(Exception):
    """A line's hint named a patient of another bucket than the line's own (see above)."""


def bucket_count(paths: Sequence[Path], bucket_bytes: int | None = None) -> int:
    size = bucket_bytes or BUCKET_BYTES
    return max(MIN_BUCKETS, min(MAX_BUCKETS, -(-input_bytes(paths) // size)))


def tag_of(patient: str) -> int:
    """A stable number for a patient key (the same in every process and run): its bucket's
    and, within the bucket, the lines read together (a patient's, or a few patients')."""
    return zlib.crc32(patient.encode())


def bucket_of(patient: str, buckets: int) -> int:
    """A stable bucket for a patient key."""
    return tag_of(patient) % buckets


# ---------------------------------------------------------------------------------------
# pass 1: the index


@dataclass(frozen=True)
class Chunk:
    """Lines ``[start, end)`` of ``paths[file]`` (whole lines); a gzip file is one chunk
    (``end`` -1: to its end)."""

    index: int
    file: int
    start: int
    end: int


def plan_chunks(paths: Sequence[Path], chunk_bytes: int | None = None) -> list[Chunk]:
    """Each file cut at line ends into chunks of about ``chunk_bytes``."""
    size_of = chunk_bytes or CHUNK_BYTES
    chunks: list[Chunk] = []
    for index, path in enumerate(paths):
        if gzipped(path):
            chunks.append(Chunk(len(chunks), index, 0, -1))
            continue
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                start = 0
                while start < size:
                    end = _line_end_after(f, start + size_of, size)
                    chunks.append(Chunk(len(chunks), index, start, end))
                    start = end
        except OSError as exc:
            raise BacktestError(f"{path}: cannot read: {exc.strerror}") from exc
    return chunks


def _line_end_after(f: Any, position: int, size: int) -> int:
    """The offset just after the first newline at or after ``position - 1`` (the start
    of the line ``position`` is in, unless it starts a line), or ``size``."""
    if position >= size:
        return size
    f.seek(position - 1)
    at = position - 1
    while True:
        block = f.read(1 << 16)
        if not block:
            return size
        found = block.find(b"\n")
        if found >= 0:
            return at + found + 1
        at += len(block)


@dataclass
class ChunkIndex:
    """What pass 1 found in one chunk; its entries are in ``index_path(folder, chunk)``."""

    chunk: int
    starts: array[int] = field(default_factory=lambda: array("q"))  # bucket -> first entry
    #: Medications about no patient: (offset, resource)
    shared: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    unowned: int = 0  # lines about no patient, Medications or not
    bad: bool = False  # a line that is not a resource (or not readable): see first_error
    data: str = ""  # the file the offsets are into, when not the NDJSON's own (gzip)


def index_path(folder: Path, chunk: int) -> Path:
    return folder / f"i{chunk:05d}.idx"


class _Indexer:
    """Pass 1 over the lines of one chunk, fed in order (``feed``)."""

    def __init__(self, buckets: int, mode: int, out: ChunkIndex) -> None:
        self.buckets = buckets
        self.mode = mode
        self.out = out
        self.rows = [array("q") for _ in range(buckets)]
        self.hints: dict[bytes, int] = {}  # reference -> its patient's tag, -1: none
        self.offset = 0
        self.window = RUN_PROBE_BYTES  # a run's first window (_run_end)

    def feed(self, data: Any, pos: int = 0, size: int = -1) -> None:
        """Whole lines (the last one's newline may be missing: the end of the file):
        ``data[pos:size]`` (bytes, or a mapped file: no copy), at ``self.offset + pos``.

        With RUNS, a line with a hint starts a run (``_run_end``), so a file sorted by
        patient, as exports are, costs little per line. A line in a run that names another
        patient is found out in pass 2 (Misplaced)."""
        rows, hints, buckets = self.rows, self.hints, self.buckets
        hinted, runs = self.mode != EXACT, self.mode == RUNS
        size, base = len(data) if size < 0 else size, self.offset
        find = data.find
        while pos < size:
            end = find(b"\n", pos, size)
            if end < 0:
                end = size
            tag = -1
            if hinted:
                at = find(SUBJECT, pos, end)
                if at < 0:
                    at = find(PATIENT, pos, end)
                if at >= 0 and (close := find(b'"', at + len(SUBJECT), end)) >= 0:
                    ref = data[at + len(SUBJECT) : close]
                    tag = hints.get(ref, -2)
                    if tag == -2:
                        tag = hints[ref] = self._hinted(ref)
            if tag < 0:
                tag = self._parsed(data[pos:end], base + pos)
                if tag >= 0:
                    rows[tag % buckets].extend((base + pos, end - pos, tag))
                pos = end + 1
                continue
            run = end + 1
            if runs and run < size:
                run = self._run_end(data, data[at : close + 1], run, size)
                self.window = max(RUN_MIN_BYTES, run - pos)
            rows[tag % buckets].extend((base + pos, min(run - 1, size) - pos, tag))
            pos = run
        self.offset = base + size

    def _run_end(self, data: Any, hint: bytes, run: int, size: int) -> int:
        """Where a run that reached ``run`` ends: after the last line holding ``hint`` in a
        window of whole lines from ``run``, searched from the window's end back (one search
        in C, which stops at the hint when the run goes on past the window: the window then
        doubles). The lines before that last one are the run's, unread (pass 2 checks each).
        """
        window = self.window
        find = data.find
        while True:
            far = find(b"\n", min(run + window, size), size) + 1 or size  # a line's end
            last = data.rfind(hint, run, far)
            if last < 0:
                return run
            stop = find(b"\n", last, size)
            if stop < 0:  # the last line, without its newline
                return size + 1
            run = stop + 1
            if run < far or run >= size:  # a whole line after it in the window: not its
                return run
            window *= 2

    def _hinted(self, ref: bytes) -> int:
        """The tag of the patient a reference names, -1 when it names none."""
        try:
            key = type_id_of(ref.decode().strip())
        except UnicodeDecodeError:
            return -1
        return tag_of(key) if key and key.startswith("Patient/") else -1

    def _parsed(self, line: bytes, offset: int) -> int:
        """A line without a hint, parsed: its patient's tag, else -1 (kept aside)."""
        resource = ndjson_resource(line, "")  # the caller names a bad line (first_error)
        if resource is None:
            return -1
        owner = patient_of((None, resource, ""))
        if owner is not None:
            return tag_of(owner)
        self.out.unowned += 1
        if resource["resourceType"] == "Medication":
            self.out.shared.append((offset, resource))
        return -1

    def write(self, path: Path) -> None:
        starts = self.out.starts
        starts.append(0)
        with path.open("wb") as f:
            for row in self.rows:
                row.tofile(f)
                starts.append(starts[-1] + len(row) // ENTRY)


def index_chunk(
    folder: Path, paths: Sequence[Path], chunk: Chunk, buckets: int, mode: int = RUNS
) -> ChunkIndex:
    """Pass 1 for one chunk: each line's place written to its patient's bucket in the
    chunk's index file. A line that is not a resource (or a file that cannot be read)
    ends the chunk, ``bad``."""
    out = ChunkIndex(chunk.index)
    indexer = _Indexer(buckets, mode, out)
    path = paths[chunk.file]
    try:
        if chunk.end < 0:
            out.data = str(folder / f"u{chunk.file:05d}.ndjson")
            _unpack(path, Path(out.data), indexer)
        else:
            mapped = mapped_file(path)  # read in place: no copy of the chunk
            try:
                indexer.feed(mapped, chunk.start, chunk.end)
            finally:  # resident no longer (the page cache keeps the pages)
                start = chunk.start - chunk.start % mmap.PAGESIZE
                if not mapped.closed:
                    mapped.madvise(mmap.MADV_DONTNEED, start, chunk.end - start)
    except (BacktestError, ChartError, OSError, EOFError, zlib.error):
        out.bad = True
    indexer.write(index_path(folder, chunk.index))
    return out


def _unpack(path: Path, dest: Path, indexer: _Indexer) -> None:
    """A gzip file unpacked to ``dest`` (which has offsets), indexed as it goes."""
    with gzip.open(path, "rb") as src, dest.open("wb") as out:
        rest = b""
        while block := src.read(CHUNK_BYTES):
            out.write(block)
            data = rest + block
            cut = data.rfind(b"\n") + 1
            indexer.feed(data[:cut])
            rest = data[cut:]
        indexer.feed(rest)


@dataclass
class Population:
    """The NDJSON indexed by bucket (pass 1 done); the index in a temporary folder."""

    folder: Path
    paths: list[Path]
    data: list[Path]  # what each file's offsets are into (an unpacked gzip, else itself)
    chunks: list[Chunk]
    starts: list[array[int]]  # each chunk's first entry of each bucket
    buckets: int
    shared: list[ChartItem]  # Medications about no patient (every chart gets them)
    owned: int  # runs of lines about a patient (none: the input is one group, in memory)

    def filled(self) -> list[int]:
        """The buckets that have lines."""
        return [b for b in range(self.buckets) if any(s[b + 1] > s[b] for s in self.starts)]


def indexed(
    folder: Path, paths: list[Path], chunks: list[Chunk], buckets: int, found: list[ChunkIndex]
) -> Population:
    """Pass 1's results together; BacktestError (or ChartError) at the first bad line in
    the order of the files, as the in-memory reading would stop."""
    found = sorted(found, key=lambda c: c.chunk)
    if any(c.bad for c in found):
        raise first_error(paths) or BacktestError(f"{paths[0].parent}: the NDJSON changed")
    data = list(paths)
    shared: list[ChartItem] = []
    for chunk, index in zip(chunks, found, strict=True):
        if index.data:
            data[chunk.file] = Path(index.data)
        path = paths[chunk.file]
        shared.extend((None, r, f"{path}:@{offset}") for offset, r in index.shared)
    starts = [c.starts for c in found]
    owned = sum(s[-1] for s in starts)
    return Population(folder, paths, data, chunks, starts, buckets, shared, owned)


def _owner(item: ChartItem, refs: dict[str, str | None]) -> str | None:
    """``patient_of(item)``, with each reference's patient remembered (a patient's
    resources all name it)."""
    resource = item[1]
    if resource["resourceType"] == "Patient":
        return patient_of(item)
    for element in ("subject", "patient"):
        value = resource.get(element)
        if not isinstance(value, dict):
            continue
        ref = value.get("reference")
        if not isinstance(ref, str):
            continue
        key = refs.get(ref, "")
        if key == "":
            key = refs[ref] = _patient_named(ref)
        if key is not None:
            return key
    return None


def _patient_named(ref: str) -> str | None:
    """The patient key a reference names (as ``patient_of`` reads it), else None."""
    stripped = ref.strip()
    key = type_id_of(stripped) if stripped else None
    return key if key is not None and key.startswith("Patient/") else None


def run_indexing(
    folder: Path,
    paths: list[Path],
    mode: int,
    run: Callable[[Sequence[Chunk], Callable[[Chunk], ChunkIndex]], list[ChunkIndex]],
) -> Population:
    """Pass 1 on ``run`` (workers, or in-process): the population indexed."""
    chunks = plan_chunks(paths)
    buckets = bucket_count(paths)

    def work(chunk: Chunk) -> ChunkIndex:
        return index_chunk(folder, paths, chunk, buckets, mode)

    return indexed(folder, paths, chunks, buckets, run(chunks, work))
