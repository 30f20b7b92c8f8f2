"""Issue 9 item 10: ``rules backtest`` skips JSON files that are not FHIR and says so.

The shared scenarios folder holds ``expected.json`` (the expected suggestions, not a chart)
beside the scenario bundles; the backtest must replay the bundles and name what it skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from smartapp.engine import Pack
from smartapp.rulestools.backtest import report, run_backtest

from .helpers import SCENARIOS, run_cli
from .test_backtest import write_bundles


def test_backtest_of_the_shared_scenarios_skips_expected_json() -> None:
    proc = run_cli("backtest", str(SCENARIOS), "--workers", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    bundles = sorted(p for p in SCENARIOS.glob("*.json") if p.name != "expected.json")
    assert data["input"]["bundle_files"] == len(bundles)
    assert data["input"]["skipped_files"] == [
        {
            "path": str(SCENARIOS / "expected.json"),
            "reason": "not FHIR: a JSON object without resourceType",
        }
    ]
    assert data["patients"] == len(bundles)
    text = run_cli("backtest", str(SCENARIOS), "--workers", "1")
    assert text.returncode == 0, text.stderr
    assert f"skipped 1 file that is not FHIR: {SCENARIOS / 'expected.json'}" in text.stdout


def test_skipped_files_do_not_change_the_result(tmp_path: Path, pack: Pack) -> None:
    charts = write_bundles(tmp_path / "bundles")
    clean = report(run_backtest(charts, [pack], workers=1))
    (charts / "expected.json").write_text(json.dumps({"now": "2026-11-20", "cases": {}}))
    (charts / "sub").mkdir()
    (charts / "sub" / "numbers.json").write_text("[1, 2, 3]")
    (charts / "sub" / "empty.json").write_text("[]")
    result = run_backtest(charts, [pack], workers=2)
    with_junk = report(result)
    assert sorted(with_junk["input"].pop("skipped_files"), key=lambda s: s["path"]) == [
        {
            "path": str(charts / "expected.json"),
            "reason": "not FHIR: a JSON object without resourceType",
        },
        {"path": str(charts / "sub" / "empty.json"), "reason": "not FHIR: an empty list"},
        {
            "path": str(charts / "sub" / "numbers.json"),
            "reason": "not FHIR: a list without resources",
        },
    ]
    assert clean["input"].pop("skipped_files") == []
    with_junk.pop("workers"), clean.pop("workers")
    assert with_junk == clean


def test_a_folder_of_nothing_but_non_fhir_json_exits_2_naming_the_skipped(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "only-expected"
    folder.mkdir()
    shutil.copy(SCENARIOS / "expected.json", folder / "expected.json")
    proc = run_cli("backtest", str(folder))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no FHIR bundles" in proc.stderr
    assert f"skipped {folder / 'expected.json'}" in proc.stderr
