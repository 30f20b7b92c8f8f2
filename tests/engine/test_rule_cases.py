"""Every rule test case in rules/tests (shared scenarios and spec branches) passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smartapp.engine import Pack
from smartapp.rulestools.cli import run_case

from .helpers import RULES, SCENARIOS

CASES = sorted((RULES / "tests").glob("*.yaml"))


def test_cases_cover_the_scenarios_and_extra_branches() -> None:
    names = {p.stem for p in CASES}
    assert {n for n in names if n.startswith("P")} == {p.stem for p in SCENARIOS.glob("P*.json")}
    assert len([n for n in names if n.startswith("X")]) >= 20


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_chart_paths_are_relative_and_resolve(path: Path) -> None:
    chart = yaml.safe_load(path.read_text())["chart"]
    assert not Path(chart).is_absolute()
    assert (path.parent / chart).resolve().is_file()


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_rule_case(path: Path, pack: Pack) -> None:
    packs = {(RULES / "packs" / "default.yaml").resolve(): pack}
    name, problems = run_case(path, None, None, packs)
    assert name == path.stem
    assert problems == []


def test_a_mismatching_case_reports_problems(tmp_path: Path, pack: Pack) -> None:
    """The runner is not vacuous: the X02 chart against an empty expectation fails."""
    case = tmp_path / "x.yaml"
    case.write_text(f"chart: {RULES / 'tests' / 'charts' / 'X02-t40-fentanyl-accidental.json'}\n"
                    "now: '2026-11-20T15:00:00Z'\nexpected: []\n")
    _name, problems = run_case(case, None, None, {(RULES / "packs" / "default.yaml").resolve():
                                                  pack})
    assert sorted(p.split()[2] for p in problems) == [
        "moud-buprenorphine", "naloxone-kit", "prc-consult"]
