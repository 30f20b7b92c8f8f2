"""Backtest input: finding the chart files of a folder, reading FHIR Bundles (``*.json``) and
bulk-export NDJSON (``*.ndjson``, gzipped ``*.ndjson.gz``, read streaming), and one chart per
patient of what was read."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from smartapp.engine import Chart, ChartError
from smartapp.engine.chart import (
    ChartItem,
    KeepCodes,
    MultiplePatientsError,
    bundle_items,
    resource_items,
)
from smartapp.engine.history import split_by_patient

BUNDLE_SUFFIXES = (".json",)
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")


class BacktestError(Exception):
    """The input cannot be read: the message names the file and what is wrong."""


def find_inputs(path: Path) -> tuple[list[Path], list[Path]]:
    """Bundle files and NDJSON files under ``path`` (a folder, searched recursively, or
    one file), sorted by name. BacktestError when there is nothing readable."""
    if not path.exists():
        raise BacktestError(f"{path}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise BacktestError(f"{path}: permission denied")
    if path.is_file():
        files = [path]
    elif path.is_dir():
        try:
            files = sorted(p for p in path.rglob("*") if p.is_file())
        except OSError as exc:
            raise BacktestError(f"{path}: cannot list the folder: {exc.strerror}") from exc
    else:
        raise BacktestError(f"{path}: not a file or folder")
    bundles = [p for p in files if p.name.lower().endswith(BUNDLE_SUFFIXES)]
    ndjson = [p for p in files if p.name.lower().endswith(NDJSON_SUFFIXES)]
    if not bundles and not ndjson:
        raise BacktestError(
            f"{path}: no FHIR bundles (*.json) or NDJSON files (*.ndjson, *.ndjson.gz)"
        )
    return bundles, ndjson


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BacktestError(f"{path}: cannot read: {exc.strerror}") from exc


class NotFhirError(Exception):
    """A ``*.json`` file that holds no FHIR at all (``expected.json``, a config file)."""


def not_fhir_reason(data: object) -> str | None:
    """Why parsed JSON is not FHIR content at all, or None when it is (or claims to be).

    Only files with no ``resourceType`` anywhere at the top are skipped: a Patient, a
    Bundle of an unread type or a list with one bad resource is FHIR and stays an error.
    """
    if isinstance(data, dict):
        return None if "resourceType" in data else "not FHIR: a JSON object without resourceType"
    if isinstance(data, list):
        if not data:
            return "not FHIR: an empty list"
        if not any(isinstance(item, dict) and "resourceType" in item for item in data):
            return "not FHIR: a list without resources"
        return None
    return f"not FHIR: a JSON {type(data).__name__}"


def read_bundle_file(path: Path) -> list[ChartItem]:
    """The resources of a JSON file holding a Bundle or a list of resources.

    Raises NotFhirError for a file that is not FHIR, BacktestError for malformed FHIR."""
    try:
        data = orjson.loads(read_bytes(path))
    except orjson.JSONDecodeError as exc:
        raise BacktestError(f"{path}: not valid JSON: {exc}") from exc
    reason = not_fhir_reason(data)
    if reason:
        raise NotFhirError(reason)
    try:
        return resource_items(data) if isinstance(data, list) else bundle_items(data)
    except ChartError as exc:
        raise BacktestError(f"{path}: {exc}") from exc


def ndjson_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of an NDJSON file, read streaming (gzip when it ends ``.gz``);
    BacktestError naming the file (and the line) when it cannot be read."""
    number = 0
    try:
        with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb") as f:
            for number, line in enumerate(f, 1):
                yield number, line
    except (OSError, EOFError, zlib.error) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = f"{path}:{number + 1}" if number else str(path)
        raise BacktestError(f"{where}: cannot read: {why}") from exc


def ndjson_resource(line: bytes | str, where: str) -> dict[str, Any] | None:
    """The resource of one NDJSON line (None for a blank line), checked: BacktestError
    naming ``file:line`` when it is not JSON, not a resource, or a Bundle."""
    if not line.strip():
        return None
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BacktestError(f"{where}: not valid JSON: {exc}") from exc
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if rtype == "Bundle":
        raise BacktestError(f"{where}: a Bundle (NDJSON holds one resource a line)")
    if isinstance(rtype, str) and rtype and isinstance(resource.get("id", ""), str):
        return resource  # the common case, checked inline
    try:
        resource_items([resource])
    except ChartError as exc:
        message = str(exc).removeprefix("resources[0]: ")
        raise BacktestError(f"{where}: {message}") from exc
    return resource


def checked_line(line: bytes | str) -> dict[str, Any]:
    """A line :func:`ndjson_resource` has checked before (read again from disk)."""
    return orjson.loads(line)


def read_ndjson_files(paths: Iterable[Path]) -> list[ChartItem]:
    """The resources of NDJSON files, one per line (blank lines are ignored)."""
    items: list[ChartItem] = []
    for path in paths:
        for number, line in ndjson_lines(path):
            where = f"{path}:{number}"
            resource = ndjson_resource(line, where)
            if resource is not None:
                items.append((None, resource, where))
    return items


def charts_of(
    items: list[ChartItem], source: str, keep: KeepCodes | None = None
) -> Iterator[Chart]:
    """One chart per patient: the whole file when it is one patient's, else split.

    ``keep``: the charts hold only what the packs' rules can read (see Chart.from_items)."""
    try:
        try:
            yield Chart.from_items(items, keep=keep)
            return
        except MultiplePatientsError:
            pass
        for group in split_by_patient(items).values():
            yield Chart.from_items(group, keep=keep)
    except ChartError as exc:
        raise BacktestError(f"{source}: {exc}") from exc
