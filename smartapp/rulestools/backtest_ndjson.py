"""A population's NDJSON grouped by patient without holding the population in memory.

A bulk export (``$export``: one file per resource type, each holding every patient's
resources of that type) is grouped by patient in two passes:

1. each file is read streaming, every line checked where it is (``file:line``) and written,
   as it was, to one of N bucket files chosen by a hash of the patient it is about (one
   task per file, on the backtest's workers);
2. each bucket (a whole set of patients, small enough to hold) is one task of the replay:
   its lines are parsed again, grouped by patient as ``split_by_patient`` groups them, in
   the order of the files and lines they came from, so the charts and the report are the
   ones the in-memory reading gives.

Medications about no patient go to every patient's chart (orders may reference them), as
in ``split_by_patient``; they are kept in memory (a formulary, not a population). When no
resource at all is about a patient, everything is one group, as there (read in memory).
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from smartapp.engine.chart import ChartItem
from smartapp.engine.history import patient_of
from smartapp.rulestools.backtest_input import (
    BacktestError,
    checked_line,
    ndjson_lines,
    ndjson_resource,
)

#: NDJSON (bytes on disk, gzip counted as GZIP_RATIO times its size) read in memory at once;
#: above it, the two passes, with buckets of about BUCKET_BYTES.
IN_MEMORY_BYTES = 256 * 1024 * 1024
BUCKET_BYTES = 32 * 1024 * 1024
GZIP_RATIO = 8
#: Bucket files a pass-1 task keeps open (under the usual limit of 1024 open files); above
#: MAX_BUCKETS * BUCKET_BYTES of input (32 GB) the buckets grow instead.
MAX_BUCKETS = 1000
WRITE_BUFFER = 64 * 1024  # per open bucket file


def input_bytes(paths: Sequence[Path]) -> int:
    """The NDJSON's size once uncompressed (gzip estimated)."""
    total = 0
    for path in paths:
        size = path.stat().st_size
        total += size * GZIP_RATIO if path.name.lower().endswith(".gz") else size
    return total


def bucket_count(paths: Sequence[Path], bucket_bytes: int | None = None) -> int:
    size = bucket_bytes or BUCKET_BYTES
    return max(1, min(MAX_BUCKETS, -(-input_bytes(paths) // size)))


def bucket_of(patient: str, buckets: int) -> int:
    """A stable bucket for a patient key (the same in every process and run)."""
    return zlib.crc32(patient.encode()) % buckets


@dataclass
class FileSplit:
    """What pass 1 found in one file."""

    index: int
    owned: int = 0  # lines about a patient, written to the buckets
    shared: list[ChartItem] = field(default_factory=list)  # Medications about no patient
    unowned: int = 0  # lines about no patient, Medications or not
    error: str | None = None  # the file's first malformed line


def bucket_path(folder: Path, bucket: int, index: int) -> Path:
    return folder / f"b{bucket:04d}-f{index:05d}.rows"


def split_file(folder: Path, paths: Sequence[Path], index: int, buckets: int) -> FileSplit:
    """Pass 1 for ``paths[index]``: each line checked, then written to its patient's
    bucket as ``line-number TAB line``; what is about no patient kept in the result.
    The first malformed line ends the file, named in ``error``."""
    path = paths[index]
    out = FileSplit(index)
    files: dict[int, IO[bytes]] = {}
    try:
        for number, line in ndjson_lines(path):
            resource = ndjson_resource(line, f"{path}:{number}")
            if resource is None:
                continue
            item: ChartItem = (None, resource, f"{path}:{number}")
            owner = patient_of(item)
            if owner is None:
                out.unowned += 1
                if resource["resourceType"] == "Medication":
                    out.shared.append(item)
                continue
            out.owned += 1
            bucket = bucket_of(owner, buckets)
            f = files.get(bucket)
            if f is None:
                f = files[bucket] = bucket_path(folder, bucket, index).open("wb", WRITE_BUFFER)
            f.write(b"%d\t%s\n" % (number, line.rstrip(b"\r\n")))
    except BacktestError as exc:
        out.error = str(exc)
    finally:
        for f in files.values():
            f.close()
    return out


def read_bucket(folder: Path, paths: Sequence[Path], bucket: int) -> list[ChartItem]:
    """Pass 2: the resources of one bucket, in the order of the files and their lines."""
    items: list[ChartItem] = []
    for index, path in enumerate(paths):
        rows = bucket_path(folder, bucket, index)
        if not rows.exists():
            continue
        with rows.open("rb") as f:
            for row in f:
                number, _, line = row.partition(b"\t")
                items.append((None, checked_line(line), f"{path}:{int(number)}"))
    return items


@dataclass
class Partitioned:
    """The NDJSON split into buckets (pass 1 done), in a temporary folder."""

    folder: Path
    paths: list[Path]
    buckets: int
    shared: list[ChartItem]  # Medications about no patient (every chart gets them)
    owned: int  # lines about a patient (none: the input is one group, read in memory)


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="handoff-backtest-")


def partitioned(
    folder: Path, paths: list[Path], buckets: int, splits: list[FileSplit]
) -> Partitioned:
    """Pass 1's results together; BacktestError at the first malformed line (in the
    order of the files, as the in-memory reading would stop)."""
    splits = sorted(splits, key=lambda s: s.index)
    for split in splits:
        if split.error:
            raise BacktestError(split.error)
    shared = [item for s in splits for item in s.shared]
    return Partitioned(folder, paths, buckets, shared, sum(s.owned for s in splits))
