"""What the physician sees, described from an engine result without a server
(screen.shown), and the label choice (engine.labels)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smartapp.engine import (
    Blocked,
    Chart,
    DeclineReason,
    Evaluation,
    Notice,
    Suggestion,
    Withheld,
    kinds,
    labels,
)
from smartapp.screen import shown

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 15, tzinfo=UTC)
CONDITION = {
    "resourceType": "Condition",
    "id": "c1",
    "code": {
        "coding": [
            {
                "system": "http://hl7.org/fhir/sid/icd-10-cm",
                "code": "F11.20",
                "display": "Opioid dependence",
            }
        ]
    },
    "onsetDateTime": "2026-11-20T10:00:00Z",
    "subject": {"reference": "Patient/p1"},
}
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1990-05-01"}


class FakePack:
    id = "handoff-default"
    version = "2.0.0"
    content_hash = "abc"


def suggestion(kind: str) -> Suggestion:
    return Suggestion(
        kind=kind,
        variant=None,
        cautions=("confirm-oud",),
        evidence=("Condition/c1",),
        rule=f"{kind}-rule",
        title=kind.title(),
        reason="OUD evidence",
        decline_reasons=(DeclineReason("other", "Other", free_text=True),),
    )


@pytest.mark.parametrize(
    ("shown_kinds", "opioid", "code"),
    [
        ([], False, "SUD"),
        ([kinds.PRC_CONSULT], False, "SUD"),
        ([kinds.PRC_CONSULT, kinds.NALOXONE_KIT], True, "OPIOIDUD"),
        ([kinds.MOUD_CONTINUE], True, "OPIOIDUD"),
        ([kinds.MOUD_BUPRENORPHINE], True, "OPIOIDUD"),
    ],
)
def test_the_opioid_label_follows_the_kinds_shown(shown_kinds, opioid, code):
    assert labels.is_opioid(shown_kinds) is opioid
    assert labels.sensitivity(shown_kinds) == code


def test_kinds_are_the_specs_stable_names():
    assert kinds.KINDS == ("prc-consult", "moud-buprenorphine", "moud-continue", "naloxone-kit")
    assert kinds.OPIOID_KINDS | {kinds.PRC_CONSULT} == set(kinds.KINDS)


def test_a_suggestion_is_described_with_its_evidence_in_words():
    chart = Chart.from_resources([PATIENT, CONDITION])
    described = shown.describe_suggestion(suggestion(kinds.MOUD_BUPRENORPHINE), chart)
    assert described["evidence"][0]["words"] == (
        "Diagnosis: Opioid dependence (F11.20), 2026-11-20 10:00"
    )
    assert described["decline_reasons"] == [{"code": "other", "label": "Other", "free_text": True}]
    assert described["cautions"] == ["confirm-oud"]


def test_evidence_missing_from_the_chart_is_named_by_its_reference():
    chart = Chart.from_resources([PATIENT])
    described = shown.describe_suggestion(suggestion(kinds.PRC_CONSULT), chart)
    assert described["evidence"][0]["words"] == "Condition/c1: Condition/c1"


def test_withheld_and_notices_are_in_the_physicians_words():
    withheld = Withheld(
        kind=kinds.MOUD_BUPRENORPHINE,
        reasons=(Blocked("allergy", ("AllergyIntolerance/a1",)), Blocked("under-age", ())),
        trigger=("Condition/c1",),
        rule="bup",
    )
    assert shown.describe_withheld(withheld) == {
        "kind": "moud-buprenorphine",
        "reason": "allergy",
        "reasons": ["allergy", "under-age"],
        "words": "the chart records a buprenorphine allergy",
        "evidence": ["AllergyIntolerance/a1"],
    }
    assert shown.notice_text(Notice("deceased")).startswith("The chart records this patient")
    assert "MedicationRequest" in shown.notice_text(
        Notice("chart-incomplete", unread=("MedicationRequest",))
    )
    assert shown.notice_text(Notice("something-new")) == "something-new"


def test_an_evaluation_is_described_with_the_label_and_the_notices():
    chart = Chart.from_resources([PATIENT, CONDITION])
    evaluation = Evaluation(
        encounter=None,
        patient=PATIENT,
        suggestions=[suggestion(kinds.PRC_CONSULT), suggestion(kinds.NALOXONE_KIT)],
        notices=[Notice("not-current-ed-visit")],
    )
    described = shown.describe_evaluation(
        evaluation, chart, FakePack(), NOW, ["cut"], "p1", missing_writes=["Task"]
    )
    assert described["opioid"] is True
    assert described["can_write"] is False
    assert described["notices"][0] == "cut"
    assert described["notices"][1].startswith("This encounter is not an ED visit")
    assert "write access to Task" in described["notices"][2]
    assert described["pack"] == {"id": "handoff-default", "version": "2.0.0", "hash": "abc"}
    assert described["demographics"]["sex"] == "female"
    log_data = shown.shown_log_data(described)
    assert log_data["suggestions"][0]["evidence"] == ["Condition/c1"]
    assert "patient" not in log_data
