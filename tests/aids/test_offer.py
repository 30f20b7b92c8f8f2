"""Which aids the engine's result calls for, on every labelled chart (../shared/scenarios,
evaluated at their `now`): the COWS calculator exactly where buprenorphine is suggested and no
COWS counts this visit, the DSM-5 checklist exactly where it carries `confirm-oud`; and a COWS
Observation as the calculator builds it decides the variant through the engine."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from smartapp.aids.offer import cows_code, for_screen
from smartapp.engine import Chart, evaluate, load_pack
from smartapp.writeback.observation import ScoreObservation, score_observation
from tests.conftest import SHARED_DIR

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SCENARIOS = SHARED_DIR / "scenarios"


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def cases() -> dict:
    return json.loads((SCENARIOS / "expected.json").read_text())["cases"]


def chart_of(name: str) -> Chart:
    return Chart.from_resources([json.loads((SCENARIOS / f"{name}.json").read_text())])


def aids_of(name: str, case: dict, pack, chart: Chart | None = None) -> dict:
    chart = chart or chart_of(name)
    evaluation = evaluate(chart, NOW, pack, encounter_id=case["encounter"])
    return for_screen(evaluation, chart, pack, NOW)


def test_the_aids_offered_on_each_labelled_chart(pack, cases):
    cows, dsm5 = set(), set()
    for name, case in cases.items():
        found = aids_of(name, case, pack)
        if found["cows"]["offered"]:
            cows.add(name[:3])
        if found["dsm5"]["offered"]:
            dsm5.add(name[:3])
    # Buprenorphine suggested, no COWS this visit ("no withdrawal score", overdoses).
    assert cows == {"P02", "P05", "P11", "P12", "P15", "P17", "P18", "P21", "P24", "P28", "P29"}
    # The cases whose buprenorphine carries confirm-oud.
    expected_confirm = {
        name[:3]
        for name, case in cases.items()
        for s in case["expected"]
        if s["kind"] == "moud-buprenorphine" and "confirm-oud" in s.get("cautions", [])
    }
    assert dsm5 == expected_confirm and {"P05", "P12", "P17", "P18", "P25"} <= dsm5


def test_a_cows_below_the_threshold_counts(pack, cases):
    found = aids_of("P23-recent-methadone-cows-10", cases["P23-recent-methadone-cows-10"], pack)
    assert found["cows"]["offered"] is False and found["cows"]["latest"]["value"] == 10


def test_a_calculator_observation_decides_the_variant(pack, cases):
    case = cases["P02-oud-no-cows"]
    code = cows_code(pack)
    assert code == {"system": "urn:handoff:flowsheet", "code": "cows-total"}
    for total, variant in ((7, "home-initiation"), (8, "ed-induction"), (14, "ed-induction")):
        observation = score_observation(
            ScoreObservation(
                identifier={"system": "urn:test", "value": f"cows-{total}"},
                code=code,
                text="COWS",
                value=total,
                patient_id="P02-pt",
                encounter_id="P02-enc",
                performer_ref="Practitioner/x",
                performer_name="Dr X",
                effective=NOW,
                note="test",
            )
        ) | {"id": f"handoff-cows-{total}"}
        bundle = json.loads((SCENARIOS / "P02-oud-no-cows.json").read_text())
        chart = Chart.from_resources([bundle, observation])
        evaluation = evaluate(chart, NOW, pack, encounter_id=case["encounter"])
        [bup] = [s for s in evaluation.suggestions if s.kind == "moud-buprenorphine"]
        assert bup.variant == variant, total
        found = for_screen(evaluation, chart, pack, NOW)
        assert found["cows"] == {
            "offered": False,
            "latest": {"reference": f"Observation/handoff-cows-{total}", "value": total},
        }
