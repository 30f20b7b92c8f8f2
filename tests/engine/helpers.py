"""Helpers for the rule engine tests: paths, scenarios, small charts, the CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smartapp.engine import Chart
from tests.shared import SHARED_DIR

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
SHARED = SHARED_DIR
SCENARIOS = SHARED / "scenarios"
SYNTHEA = SHARED / "synthea"
EXPECTED = json.loads((SCENARIOS / "expected.json").read_text())
NOW = datetime.fromisoformat(EXPECTED["now"])
SCENARIO_NAMES = sorted(EXPECTED["cases"])
assert datetime(2026, 11, 20, 15, tzinfo=UTC) == NOW


def scenario_chart(name: str) -> Chart:
    """A shared scenario's chart."""
    return Chart.from_bundle(json.loads((SCENARIOS / f"{name}.json").read_text()))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m smartapp.rulestools.cli`` as a subprocess from the repo root."""
    base = {k: v for k, v in os.environ.items() if k != "HANDOFF_RULES_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "smartapp.rulestools.cli", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def bundle(*resources: dict[str, Any], btype: str = "collection") -> dict[str, Any]:
    """A Bundle holding these resources."""
    return {"resourceType": "Bundle", "type": btype, "entry": [{"resource": r} for r in resources]}


PATIENT = {"resourceType": "Patient", "id": "t-pt", "birthDate": "1990-01-01"}
ED_VISIT = {
    "resourceType": "Encounter",
    "id": "t-enc",
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
    "subject": {"reference": "Patient/t-pt"},
    "period": {"start": "2026-11-20T10:00:00Z"},
}


def condition(cid: str, system: str, code: str, **extra: Any) -> dict[str, Any]:
    """An active, confirmed Condition of the test patient."""
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/t-pt"},
        **extra,
    }


ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def with_line(population: Path, tmp_path: Path, name: str, edit: Callable[[bytes], bytes]) -> Path:
    """A copy of a population with, after the first line of its file ``name``, ``edit`` of
    that line."""
    folder = tmp_path / "changed"
    shutil.copytree(population, folder)
    path = folder / name
    lines = path.read_bytes().splitlines()
    lines.insert(1, edit(lines[0]))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return folder


def backtest_outcome(folder: Path, pack: Any, in_memory_bytes: int) -> Any:
    """A backtest's report on one worker without what depends on the run, or its error's
    message: NDJSON above ``in_memory_bytes`` is read by pass 2 (0: always), else in memory."""
    from smartapp.rulestools.backtest import BacktestError, report, run_backtest

    try:
        return run_free(report(run_backtest(folder, [pack], 1, in_memory_bytes=in_memory_bytes)))
    except BacktestError as exc:
        return str(exc)


def run_free(data: dict[str, Any]) -> dict[str, Any]:
    """A backtest report without what depends on the run: its workers and input path."""
    data.pop("workers")
    data["input"].pop("path")
    return data
