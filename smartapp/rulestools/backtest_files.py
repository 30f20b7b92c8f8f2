"""The backtest's NDJSON files (smartapp.rulestools.backtest_ndjson): their size once
unpacked, the temporary folder, the data files mapped in memory (pass 1) or open for reads
at offsets (pass 2), and an error's lines named ``file:line`` as the in-memory reading names
them."""

from __future__ import annotations

import mmap
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from smartapp.engine.chart import ChartError, resource_key
from smartapp.rulestools.backtest_input import BacktestError, ndjson_lines, ndjson_resource

__all__ = [
    "GZIP_RATIO",
    "first_error",
    "gzipped",
    "input_bytes",
    "line_at",
    "mapped_file",
    "numbered",
    "opened_file",
    "read_at",
    "release",
    "temporary_folder",
]

#: How much larger a gzip file is counted once unpacked (an estimate: not unpacked to know).
GZIP_RATIO = 8


def input_bytes(paths: Sequence[Path]) -> int:
    """The NDJSON's size once uncompressed (gzip estimated)."""
    total = 0
    for path in paths:
        size = path.stat().st_size
        total += size * GZIP_RATIO if gzipped(path) else size
    return total


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="handoff-backtest-")


def gzipped(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


_MAPPED: dict[Path, mmap.mmap] = {}  # the data files this process has mapped


def mapped_file(path: Path) -> mmap.mmap:
    found = _MAPPED.get(path)
    if found is None:
        with path.open("rb") as f:
            found = _MAPPED[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return found


_OPENED: dict[Path, int] = {}  # the data files this process has open for reads at offsets


def opened_file(path: Path) -> int:
    """A data file open for :func:`read_at` (once per process)."""
    found = _OPENED.get(path)
    if found is None:
        found = _OPENED[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return found


def read_at(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes of an open data file from ``offset`` (fewer at its end), copied.

    Pass 2 reads each patient's lines this way rather than from the mapped file: a mapped
    page stays in the process's resident memory until unmapped, and this kernel maps the
    page cache's large folios whole, so a bucket's few scattered lines made its worker
    resident in up to 1.2 GB of the files (at 100k patients), and unmapping them cost
    CPU at every bucket. A read copies only the lines' bytes."""
    return os.pread(fd, length, offset)


def release() -> None:
    """Unmap and close the data files (the backtest is over; the temporary folder goes)."""
    for mapped in _MAPPED.values():
        mapped.close()
    _MAPPED.clear()
    for fd in _OPENED.values():
        os.close(fd)
    _OPENED.clear()


def numbered(message: str, paths: Sequence[Path]) -> str:
    """An error's message with each ``file:@offset`` as ``file:line``."""
    for path in paths:

        def line_of(match: re.Match[str], path: Path = path) -> str:
            return line_at(path, int(match.group(1)))

        message = re.sub(re.escape(str(path)) + r":@(\d+)", line_of, message)
    return message


def line_at(path: Path, offset: int) -> str:
    """``file:line`` of the line at a byte offset (of the uncompressed text)."""
    at = 0
    for number, line in ndjson_lines(path):
        if at >= offset:
            return f"{path}:{number}"
        at += len(line)
    return f"{path}:(byte {offset})"


def first_error(paths: Sequence[Path]) -> Exception | None:
    """The error the in-memory reading stops at: the first line that is not a resource
    (BacktestError, in the order of the files and lines), else the first resource
    without a key (ChartError, as ``split_by_patient`` raises it). Reads every line."""
    keyless: Exception | None = None
    try:
        for path in paths:
            for number, line in ndjson_lines(path):
                where = f"{path}:{number}"
                resource = ndjson_resource(line, where)
                if keyless is None and resource is not None and not resource.get("id"):
                    try:
                        resource_key(resource, None, where)
                    except ChartError as exc:
                        keyless = exc
    except BacktestError as exc:
        return exc
    return keyless
