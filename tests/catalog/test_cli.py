"""python -m smartapp.catalog: check prints OK with counts (exit 0) or every problem (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smartapp.catalog import main

from .helpers import BRIDGE_CLINIC, NALTREXONE, REPO_ROOT, SAMPLE, copy_sample, edit


def test_check_sample_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"OK {SAMPLE}: 10 programs (HealthcareService), 4 Organization, 6 Location; "
        "time zone America/New_York\n"
    )


def test_check_broken_prints_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = copy_sample(tmp_path)
    edit(folder, BRIDGE_CLINIC, lambda d: d.update(telecom=[]))
    edit(folder, NALTREXONE, lambda d: d["type"][0]["coding"][0].update(code="bupe"))
    assert main(["check", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"catalog {folder}: 2 problems" in captured.err
    assert f"{BRIDGE_CLINIC}: telecom: empty array is not allowed" in captured.err
    assert f"{NALTREXONE}: type[0].coding[0].code: 'bupe' is not a code" in captured.err


def test_check_missing_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "catalog folder not found" in capsys.readouterr().err


def test_list_filters_by_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(SAMPLE), "--service", "methadone-program"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("riverside-methadone: Example Riverside Opioid Treatment Program")
    assert "Mon-Fri 05:30-13:00; Sat-Sun 07:00-10:00" in out
    assert "bridge-clinic" not in out


def test_module_entry_point_exit_codes(tmp_path: Path) -> None:
    """The documented command, run as a process from the repository root."""
    command = [sys.executable, "-m", "smartapp.catalog", "check"]
    ok = subprocess.run([*command, "catalog/sample"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK catalog/sample: 10 programs")
    folder = copy_sample(tmp_path)
    edit(folder, BRIDGE_CLINIC, lambda d: d.update(colour="blue"))
    bad = subprocess.run([*command, str(folder)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
    assert f"{BRIDGE_CLINIC}: colour: unknown element" in bad.stderr
