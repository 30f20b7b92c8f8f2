"""Helpers for the catalog tests: the sample folder, copies of it to break, problem lookup."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smartapp.catalog import CatalogError, Problem, load_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "catalog" / "sample"
BRIDGE_CLINIC = "example-bridge-health/service-bridge-clinic.json"
NALTREXONE = "example-bridge-health/service-bridge-naltrexone.json"
METHADONE = "example-riverside-treatment/service-riverside-methadone.json"
BRIDGE_ORG = "example-bridge-health/organization.json"
BRIDGE_LOCATION = "example-bridge-health/location-bridge-main-campus.json"


def copy_sample(tmp_path: Path) -> Path:
    """A private copy of the sample catalog that a test may break."""
    folder = tmp_path / "catalog"
    shutil.copytree(SAMPLE, folder)
    return folder


def read(folder: Path, relative: str) -> dict[str, Any]:
    return json.loads((folder / relative).read_text(encoding="utf-8"))


def edit(folder: Path, relative: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the JSON of one catalog file in place."""
    data = read(folder, relative)
    change(data)
    (folder / relative).write_text(json.dumps(data, indent=2), encoding="utf-8")


def problems(folder: Path) -> tuple[Problem, ...]:
    """The problems load_catalog reports for ``folder`` (fails the test if it loads)."""
    with pytest.raises(CatalogError) as raised:
        load_catalog(folder)
    return raised.value.problems


def at(found: tuple[Problem, ...], file: str, path: str) -> list[str]:
    """Messages reported for one file and field path."""
    return [p.message for p in found if p.file == file and p.path == path]
