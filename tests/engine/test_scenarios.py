"""The 16 shared scenarios, through ``evaluate`` and through ``rules eval --json``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from smartapp.engine import Pack, evaluate

from .helpers import EXPECTED, NOW, SCENARIO_NAMES, SCENARIOS, run_cli, scenario_chart


def check_against_expected(case: dict[str, Any], suggestions: list[dict[str, Any]]) -> None:
    """Exact kinds, exact variant and cautions, evidence including one of evidence_any."""
    expected = case["expected"]
    assert [s["kind"] for s in suggestions] == [e["kind"] for e in expected]
    for exp, got in zip(expected, suggestions, strict=True):
        assert got["variant"] == exp.get("variant"), got["kind"]
        assert sorted(got["cautions"]) == sorted(exp.get("cautions", [])), got["kind"]
        assert set(got["evidence"]) & set(exp["evidence_any"]), (got["kind"], got["evidence"])
        assert got["evidence"] == sorted(set(got["evidence"])), "evidence sorted and unique"
        assert got["rule"], "every suggestion names its rule"


def test_there_are_sixteen_scenarios() -> None:
    assert len(SCENARIO_NAMES) == 16


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_through_evaluate(name: str, pack: Pack) -> None:
    case = EXPECTED["cases"][name]
    result = evaluate(scenario_chart(name), NOW, pack, case["encounter"])
    assert result.patient is not None and result.patient["id"] == case["patient"]
    assert result.encounter is not None and result.encounter["id"] == case["encounter"]
    check_against_expected(case, [s.to_json() for s in result.suggestions])


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_without_encounter_id_picks_the_same_visit(name: str, pack: Pack) -> None:
    """Each scenario has one open ED visit: the default selection finds it."""
    case = EXPECTED["cases"][name]
    result = evaluate(scenario_chart(name), NOW, pack)
    assert result.encounter is not None and result.encounter["id"] == case["encounter"]
    check_against_expected(case, [s.to_json() for s in result.suggestions])


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_through_cli_eval_json(name: str) -> None:
    case = EXPECTED["cases"][name]
    proc = run_cli("eval", str(SCENARIOS / f"{name}.json"), "--now", EXPECTED["now"],
                   "--encounter", case["encounter"], "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"pack", "suggestions"}
    assert out["pack"] == {"id": "handoff-default", "version": "1.0.0"}
    for suggestion in out["suggestions"]:
        assert set(suggestion) == {"kind", "variant", "cautions", "evidence", "rule"}
    check_against_expected(case, out["suggestions"])
