"""The chart as it stood at a past time: visibility, statuses then, and the cheap view
(``Chart.as_of``) against the same chart cut and rebuilt from scratch (``cut_bundle``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from smartapp.engine import Chart, Pack, evaluate
from smartapp.engine.asof import cut_bundle
from smartapp.engine.history import ed_visits, replay

from .helpers import ICD, RXNORM, SCT, SYNTHEA, bundle, condition

T = datetime(2020, 1, 10, 14, 0, tzinfo=UTC)
EMER = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"}
PT = {"resourceType": "Patient", "id": "t-pt", "birthDate": "1985-05-05"}


def encounter(eid: str, start: str, end: str | None = None, **extra: Any) -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": EMER,
        "subject": {"reference": "Patient/t-pt"},
        "period": period,
        **extra,
    }


VISIT = encounter("v", "2020-01-10T10:00:00Z", "2020-01-10T14:00:00Z")


def at(chart: Chart, when: datetime = T, visit: str = "v") -> tuple[Chart, Chart]:
    """The view and the from-scratch chart at a time, checked equal resource by resource."""
    view = chart.as_of(when, visit)
    full = Chart.from_bundle(cut_bundle(chart, when, visit))
    assert {e.key: e.resource for e in view.of_all()} == {e.key: e.resource for e in full.of_all()}
    assert len(view) == len(full)
    return view, full


def kinds(chart: Chart, pack: Pack, when: datetime = T, visit: str = "v") -> dict[str, Any]:
    """Suggestions at a visit (view and from scratch must agree)."""
    view, full = at(chart, when, visit)
    fast = evaluate(view, when, pack, visit)
    slow = evaluate(full, when, pack, visit)
    assert fast.to_json() == slow.to_json()
    return {s.kind: s.variant for s in fast.suggestions}


def test_resources_recorded_after_the_time_are_invisible() -> None:
    later_dx = condition(
        "dx", ICD, "F11.20", onsetDateTime="2019-01-01", recordedDate="2020-02-01"
    )  # onset before, recorded after
    late_lab = {
        "resourceType": "Observation",
        "id": "lab",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59673-4"}]},
        "effectiveDateTime": "2020-01-10T11:00:00Z",
        "issued": "2020-01-10T15:00:00Z",
    }
    order = {
        "resourceType": "MedicationRequest",
        "id": "mr",
        "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1819"}]},
        "authoredOn": "2020-01-10T14:00:01Z",
    }
    next_visit = encounter("v2", "2020-03-01T10:00:00Z", "2020-03-01T11:00:00Z")
    in_next = condition("od2", ICD, "T40.1X1A", encounter={"reference": "Encounter/v2"})
    on_time = condition(
        "od",
        ICD,
        "T40.1X1A",
        onsetDateTime="2020-01-10T14:00:00Z",
        encounter={"reference": "Encounter/v"},
    )
    chart = Chart.from_bundle(
        bundle(PT, VISIT, later_dx, late_lab, order, next_visit, in_next, on_time)
    )
    view, _ = at(chart)
    assert {e.key for e in view.of_all()} == {"Patient/t-pt", "Encounter/v", "Condition/od"}
    assert view.get("Condition/dx") is None and view.resolve("Encounter/v2") is None
    assert view.with_code(ICD, "F11.20") == () and view.codes_in_system(ICD) == {"T40.1X1A"}
    assert chart.as_of(datetime(2020, 2, 1, tzinfo=UTC)).get("Condition/dx") is not None


def test_condition_abated_later_was_active_then(pack: Pack) -> None:
    aud = condition(
        "aud",
        ICD,
        "F10.20",
        onsetDateTime="2015-01-01",
        clinicalStatus={"coding": [{"code": "resolved"}]},
        abatementDateTime="2020-06-01",
    )
    chart = Chart.from_bundle(bundle(PT, VISIT, aud))
    view, _ = at(chart)
    assert view.get("Condition/aud")["clinicalStatus"]["coding"][0]["code"] == "active"
    assert "abatementDateTime" not in view.get("Condition/aud")
    assert kinds(chart, pack) == {"prc-consult": None}
    assert chart.get("Condition/aud") is aud and aud["abatementDateTime"] == "2020-06-01"
    late = datetime(2020, 7, 1, tzinfo=UTC)
    assert chart.as_of(late).get("Condition/aud") is aud
    assert evaluate(chart, T, pack, "v").suggestions == []  # today's chart: resolved


def test_deceased_is_as_of_the_time(pack: Pack) -> None:
    dx = condition("dx", ICD, "F11.20", onsetDateTime="2010-01-01")
    dead_later = {**PT, "deceasedDateTime": "2021-01-01T00:00:00Z"}
    chart = Chart.from_bundle(bundle(dead_later, VISIT, dx))
    assert "deceasedDateTime" not in at(chart)[0].patient
    assert set(kinds(chart, pack)) == {"prc-consult", "moud-buprenorphine", "naloxone-kit"}
    died_in_the_visit = {**PT, "deceasedDateTime": "2020-01-10T13:00:00Z"}
    chart = Chart.from_bundle(bundle(died_in_the_visit, VISIT, dx))
    assert kinds(chart, pack) == {}
    undated = {**PT, "deceasedBoolean": True}  # alive at a visit they came to
    chart = Chart.from_bundle(bundle(undated, VISIT, dx))
    assert set(kinds(chart, pack)) == {"prc-consult", "moud-buprenorphine", "naloxone-kit"}


def test_encounters_in_progress_then_and_the_current_visit() -> None:
    admitted = encounter("adm", "2020-01-09T00:00:00Z", "2020-01-12T00:00:00Z")
    chart = Chart.from_bundle(bundle(PT, VISIT, admitted))
    view, _ = at(chart)
    assert view.get("Encounter/v")["status"] == "in-progress"
    assert "end" not in view.get("Encounter/v")["period"]
    assert view.get("Encounter/adm")["status"] == "in-progress"
    assert chart.as_of(datetime(2020, 1, 13, tzinfo=UTC)).get("Encounter/adm") is admitted
    assert VISIT["status"] == "finished" and "end" in VISIT["period"]


def test_statement_completed_later_was_active_then(pack: Pack) -> None:
    methadone = {
        "resourceType": "MedicationStatement",
        "id": "ms",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6813"}]},
        "effectivePeriod": {"start": "2019-01-01", "end": "2020-05-01"},
    }
    dx = condition("dx", ICD, "F11.20", onsetDateTime="2018-01-01")
    chart = Chart.from_bundle(bundle(PT, VISIT, methadone, dx))
    assert set(kinds(chart, pack)) == {"prc-consult", "moud-continue", "naloxone-kit"}
    later = datetime(2020, 6, 1, tzinfo=UTC)
    assert "moud-buprenorphine" in kinds(chart, pack, later)


def test_views_reject_naive_times_and_nesting() -> None:
    chart = Chart.from_bundle(bundle(PT, VISIT))
    with pytest.raises(ValueError, match="timezone"):
        chart.as_of(datetime(2020, 1, 1))
    with pytest.raises(TypeError):
        chart.as_of(T).as_of(T)


def test_urn_uuid_references_survive_the_cut() -> None:
    """A transaction bundle (Synthea style): the cut keeps each fullUrl."""
    enc = {**VISIT, "id": "e1", "subject": {"reference": "urn:uuid:p1"}}
    od = condition(
        "c1",
        SCT,
        "55680006",
        encounter={"reference": "urn:uuid:e1"},
        subject={"reference": "urn:uuid:p1"},
    )
    data = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {**PT, "id": "p1"}},
            {"fullUrl": "urn:uuid:e1", "resource": enc},
            {"fullUrl": "urn:uuid:c1", "resource": od},
        ],
    }
    chart = Chart.from_bundle(data)
    view, full = at(chart, visit="e1")
    assert full.entry("Condition/c1").encounter == "Encounter/e1"
    assert view.get("urn:uuid:c1") == od


def _synthea_charts() -> list[tuple[str, Chart]]:
    return [
        (p.name, Chart.from_bundle(orjson.loads(p.read_bytes())))
        for p in sorted(SYNTHEA.glob("*.json"))
    ]


def test_view_equals_from_scratch_on_every_synthea_ed_visit(pack: Pack) -> None:
    """Every past ED visit of the 100 Synthea patients (227; up to 23 for one patient):
    suggestions, evidence and every resource of the view equal the rebuilt cut chart."""
    per_patient = []
    for name, chart in _synthea_charts():
        visits, skipped = ed_visits(chart, pack.document.current_encounter)
        assert skipped == []
        fast = replay(chart, [pack], visits)
        for visit, replayed in zip(visits, fast, strict=True):
            cut = Chart.from_bundle(cut_bundle(chart, visit.time, visit.key))
            slow = evaluate(cut, visit.time, pack, visit.key)
            expected = [(s.kind, s.variant, s.cautions, s.evidence) for s in slow.suggestions]
            assert list(replayed.results[0]) == expected, (name, visit.key)
            view = chart.as_of(visit.time, visit.key)
            assert {e.key: e.resource for e in view.of_all()} == {
                e.key: e.resource for e in cut.of_all()
            }, (name, visit.key)
        per_patient.append(len(visits))
    assert sum(per_patient) == 227 and max(per_patient) >= 10


def test_replay_is_not_the_current_chart(pack: Pack) -> None:
    """On Synthea, the cut matters: a deceased patient's past overdose visit gets a coach
    consult as of then, and nothing on today's chart (deceased)."""
    for _name, chart in _synthea_charts():
        patient = chart.patient or {}
        if "deceasedDateTime" not in patient:
            continue
        for entry in chart.with_code(SCT, "55680006"):
            visit = chart.entry(entry.encounter)
            if visit is None or visit.resource["class"]["code"] != "EMER":
                continue
            when = datetime.fromisoformat(visit.resource["period"]["end"])
            replayed = evaluate(chart.as_of(when, visit.key), when, pack, visit.key)
            today = evaluate(chart, when, pack, visit.key)
            assert today.suggestions == []
            if replayed.suggestions:
                # v2: the overdose this visit brings a kit too
                assert [s.kind for s in replayed.suggestions] == ["prc-consult", "naloxone-kit"]
                assert entry.key in replayed.suggestions[0].evidence
                return
    pytest.fail("no deceased Synthea patient with an adult overdose ED visit")


def test_cut_bundle_is_json() -> None:
    chart = Chart.from_bundle(bundle(PT, VISIT))
    assert json.loads(json.dumps(cut_bundle(chart, T, "v")))["type"] == "collection"


def test_times_of_are_each_resources_appearance_and_change() -> None:
    """``times_of`` (the replay's one pass) gives every key's ``appears_at`` and
    ``changes_at``, on a full chart and on a view of it, on the Synthea charts."""
    checked = 0
    for _name, chart in _synthea_charts()[:20]:
        keys = [e.key for e in chart.of_all()]
        expected = [(k, chart.appears_at(k), chart.changes_at(k)) for k in keys]
        assert list(chart.times_of(keys)) == expected
        view = chart.as_of(T)
        assert list(view.times_of(keys)) == expected
        checked += sum(1 for _k, a, c in expected if a is not None and c is not None)
    assert checked > 0  # resources that both appear and change at a time are among them
