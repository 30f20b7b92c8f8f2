"""The shared scenarios (every case of expected.json), through ``evaluate`` and through
``rules eval --json``: suggestions, and the withheld ones with their reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest

from smartapp.engine import Pack, evaluate

from .helpers import EXPECTED, NOW, SCENARIO_NAMES, SCENARIOS, run_cli, scenario_chart


def check_against_expected(
    case: dict[str, Any], suggestions: list[dict[str, Any]], withheld: list[dict[str, Any]]
) -> None:
    """Exact kinds, exact variant and cautions, evidence including one of evidence_any;
    exactly the withheld kinds expected, each with its (first) reason."""
    expected = case["expected"]
    assert [(w["kind"], w["reason"]) for w in withheld] == [
        (w["kind"], w["reason"]) for w in case["withheld"]
    ]
    for w in withheld:
        assert w["reasons"][0] == {"reason": w["reason"], "evidence": w["evidence"]}
    assert [s["kind"] for s in suggestions] == [e["kind"] for e in expected]
    for exp, got in zip(expected, suggestions, strict=True):
        assert got["variant"] == exp.get("variant"), got["kind"]
        assert sorted(got["cautions"]) == sorted(exp.get("cautions", [])), got["kind"]
        assert set(got["evidence"]) & set(exp["evidence_any"]), (got["kind"], got["evidence"])
        assert got["evidence"] == sorted(set(got["evidence"])), "evidence sorted and unique"
        assert got["rule"], "every suggestion names its rule"
        assert list(got["caution_evidence"]) == got["cautions"], "evidence for each caution"


def test_every_scenario_chart_has_a_case() -> None:
    """Every chart in the shared folder is a labelled case of expected.json (29 in v2)."""
    charts = {p.stem for p in SCENARIOS.glob("P*.json")}
    assert charts == set(SCENARIO_NAMES)
    assert len(SCENARIO_NAMES) >= 29


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_through_evaluate(name: str, pack: Pack) -> None:
    case = EXPECTED["cases"][name]
    result = evaluate(scenario_chart(name), NOW, pack, case["encounter"])
    assert result.patient is not None and result.patient["id"] == case["patient"]
    assert result.encounter is not None and result.encounter["id"] == case["encounter"]
    out = result.to_json()
    check_against_expected(case, out["suggestions"], out["withheld"])


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_without_encounter_id_picks_the_same_visit(name: str, pack: Pack) -> None:
    """Each scenario has one open ED visit: the default selection finds it."""
    case = EXPECTED["cases"][name]
    result = evaluate(scenario_chart(name), NOW, pack)
    assert result.encounter is not None and result.encounter["id"] == case["encounter"]
    out = result.to_json()
    check_against_expected(case, out["suggestions"], out["withheld"])


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_through_cli_eval_json(name: str) -> None:
    case = EXPECTED["cases"][name]
    proc = run_cli(
        "eval",
        str(SCENARIOS / f"{name}.json"),
        "--now",
        EXPECTED["now"],
        "--encounter",
        case["encounter"],
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"pack", "suggestions", "withheld", "notices"}
    assert out["pack"] == {"id": "handoff-default", "version": "2.0.0"}
    for suggestion in out["suggestions"]:
        assert set(suggestion) == {
            "kind",
            "variant",
            "cautions",
            "caution_evidence",
            "evidence",
            "rule",
        }
    for withheld in out["withheld"]:
        assert set(withheld) == {"kind", "reason", "evidence", "reasons"}
    check_against_expected(case, out["suggestions"], out["withheld"])
    deceased = [w for w in case["withheld"] if w["reason"] == "deceased"]
    assert [n["code"] for n in out["notices"]] == (["deceased"] if deceased else [])
