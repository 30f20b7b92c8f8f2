"""evaluate(): encounter selection, "this visit", evidence, result objects, purity."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from smartapp.engine import (
    Blocked,
    Chart,
    ChartError,
    DeclineReason,
    Pack,
    Suggestion,
    evaluate,
    load_pack,
)
from tests.shared import SCENARIOS_DIR

from .helpers import (
    ED_VISIT,
    ICD,
    NOW,
    PATIENT,
    RULES,
    RXNORM,
    SCT,
    SYNTHEA,
    condition,
    scenario_chart,
)


def kinds(chart: Chart, pack: Pack, encounter: str | None = "t-enc") -> dict[str, Suggestion]:
    return {s.kind: s for s in evaluate(chart, NOW, pack, encounter).suggestions}


def test_now_must_be_timezone_aware(pack: Pack) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(scenario_chart("P01-oud-withdrawal"), datetime(2026, 11, 20, 15), pack)


def test_unknown_encounter_is_an_error(pack: Pack) -> None:
    with pytest.raises(ChartError, match="encounter 'nope' is not in the chart"):
        evaluate(scenario_chart("P01-oud-withdrawal"), NOW, pack, "nope")
    for given in ("Encounter/P01-enc", "urn:uuid:6642b30b-df0c-57f0-8eb4-8e99ff7e5cc1"):
        result = evaluate(scenario_chart("P01-oud-withdrawal"), NOW, pack, given)
        assert result.encounter is not None and result.encounter["id"] == "P01-enc"


def _encounter(
    eid: str, start: str, status: str = "in-progress", code: str = "EMER", r5: bool = False
) -> dict[str, Any]:
    cls: Any = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code}
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": [{"coding": [cls]}] if r5 else cls,
        "period": {"start": start},
    }


def test_current_encounter_is_the_latest_open_ed_visit(pack: Pack) -> None:
    chart = Chart.from_resources(
        [
            PATIENT,
            _encounter("old-open", "2026-11-18T09:00:00Z"),
            _encounter("current", "2026-11-20T10:00:00Z", status="triaged", r5=True),
            _encounter("newer-finished", "2026-11-20T12:00:00Z", status="finished"),
            _encounter("newer-clinic", "2026-11-20T13:00:00Z", code="AMB"),
        ]
    )
    assert evaluate(chart, NOW, pack).encounter == chart.get("Encounter/current")


def test_no_open_ed_visit_means_nothing_is_this_visit(pack: Pack) -> None:
    """v2: the overdose is then not this visit (no buprenorphine) but, in the last 365
    days, a recent overdose: the coach consult and a kit."""
    overdose = condition("od", ICD, "T40.1X1A", onsetDateTime="2026-11-20T11:00:00Z")
    result = evaluate(Chart.from_resources([PATIENT, overdose]), NOW, pack)
    assert result.encounter is None
    assert [s.kind for s in result.suggestions] == ["prc-consult", "naloxone-kit"]


@pytest.mark.parametrize(
    ("extra", "this_visit"),
    [
        # v2: a Condition timed more than 24 h before the start is history, whatever it
        # references (v1 read this one as this visit)
        ({"encounter": {"reference": "Encounter/t-enc"}, "onsetDateTime": "2020-01-01"}, False),
        (
            {
                "encounter": {"reference": "Encounter/t-enc"},
                "onsetDateTime": "2026-11-19T10:00:00Z",
            },
            True,
        ),  # exactly 24 h before: this visit
        (
            {
                "encounter": {"reference": "Encounter/t-enc"},
                "onsetDateTime": "2026-11-19T09:59:59Z",
            },
            False,
        ),
        ({"encounter": {"reference": "Encounter/t-enc"}, "recordedDate": "2026-11-20"}, True),
        ({"encounter": {"reference": "Encounter/t-enc"}, "recordedDate": "2026-11-18"}, False),
        ({"encounter": {"reference": "Encounter/t-enc"}}, True),  # no time at all
        ({"onsetDateTime": "2026-11-20T10:00:00Z"}, True),  # at the start counts
        ({"onsetDateTime": "2026-11-20T09:59:59Z"}, False),
        ({"onsetDateTime": "2026-11-20"}, False),  # a date is its first instant
        ({"onsetDateTime": "2026-11-20T06:00:00-05:00"}, True),  # 11:00Z
        (
            {
                "encounter": {"reference": "Encounter/other"},
                "onsetDateTime": "2026-11-20T11:00:00Z",
            },
            False,
        ),
        ({"encounter": {"display": "ED visit"}, "onsetDateTime": "2026-11-20T11:00:00Z"}, False),
        ({}, False),
    ],
)
def test_this_visit(pack: Pack, extra: dict[str, Any], this_visit: bool) -> None:
    overdose = condition("od", ICD, "T40.1X1A", **extra)
    chart = Chart.from_resources([PATIENT, ED_VISIT, overdose])
    assert ("moud-buprenorphine" in kinds(chart, pack)) is this_visit


def test_medication_administration_uses_context_for_this_visit(pack: Pack) -> None:
    overdose = condition("od", SCT, "55680006", encounter={"reference": "Encounter/t-enc"})
    given = {
        "resourceType": "MedicationAdministration",
        "id": "ma",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "7242"}]},
        "context": {"reference": "Encounter/t-enc"},
        "effectiveDateTime": "2019-01-01",
    }
    got = kinds(Chart.from_resources([PATIENT, ED_VISIT, overdose, given]), pack)
    assert got["moud-buprenorphine"].evidence == ("Condition/od", "MedicationAdministration/ma")
    not_done = {**given, "status": "not-done"}
    got = kinds(Chart.from_resources([PATIENT, ED_VISIT, overdose, not_done]), pack)
    # v2: the overdose this visit triggers a kit as well
    assert set(got) == {"prc-consult", "naloxone-kit"}


def test_naloxone_window_is_bounded_by_now(pack: Pack) -> None:
    oud = condition("oud", ICD, "F11.20")

    def order(authored: datetime) -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "id": "nx",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1725064"}]},
            "authoredOn": authored.isoformat(),
        }

    for authored, has_kit in [
        (NOW - timedelta(days=365), True),
        (NOW - timedelta(days=366), False),
        (NOW + timedelta(days=1), False),
    ]:
        chart = Chart.from_resources([PATIENT, ED_VISIT, oud, order(authored)])
        assert ("naloxone-kit" not in kinds(chart, pack)) is has_kit, authored


def test_unknown_birth_date_gates_age_rules_but_not_naloxone(pack: Pack) -> None:
    patient = {k: v for k, v in PATIENT.items() if k != "birthDate"}
    chart = Chart.from_resources([patient, ED_VISIT, condition("oud", ICD, "F11.20")])
    assert set(kinds(chart, pack)) == {"naloxone-kit"}


def test_suggestion_objects(pack: Pack) -> None:
    result = evaluate(scenario_chart("P14-pregnant"), NOW, pack, "P14-enc")
    bup = next(s for s in result.suggestions if s.kind == "moud-buprenorphine")
    assert bup.to_json() == {
        "kind": "moud-buprenorphine",
        "variant": "ed-induction",
        "cautions": ["pregnancy"],
        "caution_evidence": {"pregnancy": ["Condition/P14-cond2"]},
        "evidence": ["Condition/P14-cond1"],
        "rule": "moud-buprenorphine-oud",
    }
    assert bup.title and bup.reason
    assert bup.decline_reasons[-1] == DeclineReason("other", "Other", free_text=True)
    assert [d.code for d in bup.decline_reasons] == [
        "patient-declined",
        "in-treatment-elsewhere",
        "clinically-inappropriate",
        "other",
    ]  # "coach-unavailable" is for the coach consult only (issue 9 item 3)
    prc = next(s for s in result.suggestions if s.kind == "prc-consult")
    assert [d.code for d in prc.decline_reasons] == [
        "patient-declined",
        "in-treatment-elsewhere",
        "clinically-inappropriate",
        "coach-unavailable",
        "other",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bup.kind = "x"  # type: ignore[misc]
    assert result.to_json()["pack"] == {"id": "handoff-default", "version": "2.0.0"}
    assert result.content_hash == pack.content_hash and result.now == NOW


def test_any_of_unions_evidence_of_every_true_branch(pack: Pack) -> None:
    kit = kinds(scenario_chart("P15-fentanyl-positive"), pack, "P15-enc")["naloxone-kit"]
    assert kit.evidence == ("Condition/P15-cond1", "Observation/P15-uds2")


def test_not_and_all_of_in_a_custom_pack(tmp_path: Path) -> None:
    """A pack of one's own: `not` adds no evidence, `all_of` adds all branches'."""
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "mini.yaml").write_text("""
id: mini
version: "0.1"
current_encounter:
  class: {system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: EMER}
  status: [in-progress]
decline_reasons: [{code: nope, label: "No"}]
facts:
  oud:
    condition:
      valueset: oud-active
      clinical_status: [active]
      verification_status: {not: [refuted]}
  pregnant:
    condition: {valueset: pregnancy, clinical_status: [active], verification_status: [confirmed]}
suggestions:
  - id: r1
    kind: only-if-not-pregnant
    title: T
    reason: R
    when: {all_of: [oud, {not: pregnant}]}
    decline_reasons: [nope]
  - id: r2
    kind: both
    title: T
    reason: R
    when: {all_of: [oud, pregnant]}
    decline_reasons: [nope]
""")
    mini = load_pack(tmp_path / "packs" / "mini.yaml", RULES / "valuesets")
    assert set(mini.valuesets) == {"oud-active", "pregnancy"}
    result = evaluate(scenario_chart("P14-pregnant"), NOW, mini, "P14-enc")
    assert [(s.kind, s.evidence) for s in result.suggestions] == [
        ("both", ("Condition/P14-cond1", "Condition/P14-cond2"))
    ]
    result = evaluate(scenario_chart("P01-oud-withdrawal"), NOW, mini, "P01-enc")
    assert [(s.kind, s.evidence) for s in result.suggestions] == [
        ("only-if-not-pregnant", ("Condition/P01-cond1",))
    ]


def test_evaluate_does_not_mutate_its_inputs(pack: Pack) -> None:
    data = json.loads((SCENARIOS_DIR / "P05-heroin-overdose.json").read_text())
    before = json.dumps(data, sort_keys=True)
    chart = Chart.from_bundle(data)
    first = evaluate(chart, NOW, pack, "P05-enc")
    assert evaluate(chart, NOW, pack, "P05-enc") == first
    assert json.dumps(data, sort_keys=True) == before


def test_large_chart_evaluates_quickly(pack: Pack) -> None:
    """Indexes are built once: evaluation cost does not scale with chart x rules."""
    biggest = max(SYNTHEA.glob("*.json"), key=lambda p: p.stat().st_size)
    chart = Chart.from_bundle(json.loads(biggest.read_text()))
    assert len(chart) > 1000
    start = time.perf_counter()
    for _ in range(50):
        evaluate(chart, NOW, pack)
    assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------------------------------
# version 2: withheld suggestions, notices and chart completeness


def test_withheld_lists_every_reason_in_order_with_its_evidence(pack: Pack) -> None:
    """P26: on naltrexone and allergic: reason on-moud first, the allergy never hidden."""
    result = evaluate(scenario_chart("P26-withheld-two-reasons"), NOW, pack, "P26-enc")
    (bup,) = result.withheld
    assert bup.to_json() == {
        "kind": "moud-buprenorphine",
        "reason": "on-moud",
        "evidence": ["MedicationRequest/P26-mr3"],
        "reasons": [
            {"reason": "on-moud", "evidence": ["MedicationRequest/P26-mr3"]},
            {"reason": "allergy", "evidence": ["AllergyIntolerance/P26-al2"]},
        ],
    }
    assert bup.trigger == ("Condition/P26-cond1",) and bup.rule == "moud-buprenorphine-oud"
    assert result.notices == []


def test_deceased_withholds_each_triggered_kind_and_notices(pack: Pack) -> None:
    result = evaluate(scenario_chart("P16-deceased"), NOW, pack, "P16-enc")
    assert result.suggestions == []
    assert [n.to_json() for n in result.notices] == [{"code": "deceased"}]
    for withheld in result.withheld:
        assert withheld.reasons[0] == Blocked("deceased", ("Patient/P16-pt",))


def test_unread_medications_caution_raise_the_threshold_and_notice(pack: Pack) -> None:
    """P01 (COWS 11): without the medication list, still suggested, but home initiation
    (threshold 13) with chart-incomplete; the notice lists every unread type, sorted."""
    chart = scenario_chart("P01-oud-withdrawal")
    result = evaluate(chart, NOW, pack, "P01-enc", unread=["Observation", "MedicationRequest"])
    bup = next(s for s in result.suggestions if s.kind == "moud-buprenorphine")
    assert (bup.variant, bup.cautions) == ("home-initiation", ("chart-incomplete",))
    assert bup.caution_evidence == {"chart-incomplete": ()}
    assert [n.to_json() for n in result.notices] == [
        {"code": "chart-incomplete", "unread": ["MedicationRequest", "Observation"]}
    ]
    assert result.unread == ("MedicationRequest", "Observation")
    only_labs = evaluate(chart, NOW, pack, "P01-enc", unread=["ServiceRequest"])
    bup = next(s for s in only_labs.suggestions if s.kind == "moud-buprenorphine")
    assert (bup.variant, bup.cautions) == ("ed-induction", ())


def test_caution_evidence_names_what_each_caution_rests_on(pack: Pack) -> None:
    result = evaluate(scenario_chart("P23-recent-methadone-cows-10"), NOW, pack, "P23-enc")
    bup = next(s for s in result.suggestions if s.kind == "moud-buprenorphine")
    assert bup.caution_evidence == {"recent-methadone": ("MedicationAdministration/P23-ma2",)}
    result = evaluate(scenario_chart("P05-heroin-overdose"), NOW, pack, "P05-enc")
    bup = next(s for s in result.suggestions if s.kind == "moud-buprenorphine")
    assert "Condition/P05-cond1" in bup.caution_evidence["confirm-oud"]


def test_launch_encounter_that_is_not_an_open_ed_visit_is_noticed(pack: Pack) -> None:
    clinic = _encounter("clinic", "2026-11-20T10:00:00Z", code="AMB")
    chart = Chart.from_resources([PATIENT, clinic, condition("oud", ICD, "F11.20")])
    assert [n.code for n in evaluate(chart, NOW, pack, "clinic").notices] == [
        "not-current-ed-visit"
    ]
    finished = _encounter("done", "2026-11-20T10:00:00Z", status="finished")
    chart = Chart.from_resources([PATIENT, finished])
    assert [n.code for n in evaluate(chart, NOW, pack, "done").notices] == ["not-current-ed-visit"]
    assert evaluate(chart, NOW, pack).notices == []  # no launch encounter: no notice


def test_diagnosis_and_reason_references_resolve_through_urn_uuid(pack: Pack) -> None:
    """A transaction bundle: the encounter's diagnosis names the Condition by its urn:uuid
    fullUrl; a D-coded reason of the visit is history (a recent overdose), not this visit."""
    od = condition("od", ICD, "T40.1X1A", onsetDateTime="2026-11-20T09:00:00Z")
    visit = {**ED_VISIT, "diagnosis": [{"condition": {"reference": "urn:uuid:od-1"}}]}
    data = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:pt-1", "resource": PATIENT},
            {"fullUrl": "urn:uuid:enc-1", "resource": visit},
            {"fullUrl": "urn:uuid:od-1", "resource": od},
        ],
    }
    got = kinds(Chart.from_bundle(data), pack)
    assert got["moud-buprenorphine"].evidence == ("Condition/od",)
    later = {**ED_VISIT, "reasonCode": [{"coding": [{"system": ICD, "code": "T40.1X1D"}]}]}
    got = kinds(Chart.from_resources([PATIENT, later]), pack)
    assert set(got) == {"prc-consult", "naloxone-kit"}
    assert got["naloxone-kit"].evidence == ("Encounter/t-enc",)
