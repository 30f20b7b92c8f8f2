"""Chart: bundle shapes, reference resolution, indexes, and refusing malformed input."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from smartapp.engine import Chart, ChartError, Pack, evaluate

from .helpers import ED_VISIT, ICD, NOW, PATIENT, RXNORM, SYNTHEA, bundle, condition


def test_collection_bundle_indexes_by_type_code_and_key() -> None:
    cond = condition("c1", ICD, "F11.20")
    chart = Chart.from_bundle(bundle(PATIENT, ED_VISIT, cond))
    assert len(chart) == 3
    assert chart.patient == PATIENT
    assert chart.encounters == [ED_VISIT]
    assert chart.get("Condition/c1") is cond
    assert [e.key for e in chart.with_code(ICD, "F11.20")] == ["Condition/c1"]
    assert chart.codes_in_system(ICD) == {"F11.20"}
    assert chart.get("Condition/nope") is None


def test_references_resolve_in_every_form() -> None:
    cond = condition("c1", ICD, "F11.20")
    data = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": "https://ehr.example/fhir/Patient/t-pt", "resource": PATIENT},
            {"fullUrl": "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427", "resource": cond},
        ],
    }
    chart = Chart.from_bundle(data)
    for ref in (
        "Condition/c1",
        "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "https://other.example/fhir/Condition/c1",
        "Condition/c1/_history/2",
    ):
        assert chart.get(ref) is cond, ref
    assert chart.get("https://ehr.example/fhir/Patient/t-pt") is PATIENT


def test_urn_uuid_resources_without_id_are_keyed_from_full_url() -> None:
    cond = condition("x", ICD, "F11.20")
    del cond["id"]
    data = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"fullUrl": "urn:uuid:6a1b", "resource": cond, "request": {"method": "POST"}}],
    }
    chart = Chart.from_bundle(data)
    assert chart.get("urn:uuid:6a1b") is cond
    assert chart.entry("Condition/6a1b") is not None


def test_batch_response_with_nested_searchsets_is_flattened() -> None:
    data = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"response": {"status": "200 OK"}, "resource": bundle(PATIENT, btype="searchset")},
            {
                "response": {"status": "200"},
                "resource": bundle(ED_VISIT, condition("c1", ICD, "F11.20"), btype="searchset"),
            },
        ],
    }
    chart = Chart.from_bundle(data)
    assert chart.get("Condition/c1") is not None and chart.patient == PATIENT


def test_from_resources_accepts_a_list() -> None:
    chart = Chart.from_resources([PATIENT, ED_VISIT, condition("c1", ICD, "F11.20")])
    assert chart.get("Encounter/t-enc") == ED_VISIT


def test_medication_codes_come_from_referenced_or_contained_medication() -> None:
    med = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"coding": [{"system": RXNORM, "code": "6813"}]},
    }
    by_ref = {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "medicationReference": {"reference": "Medication/m1"},
    }
    contained = {
        "resourceType": "MedicationStatement",
        "id": "ms1",
        "status": "active",
        "contained": [{**med, "id": "inner"}],
        "medicationReference": {"reference": "#inner"},
    }
    chart = Chart.from_resources([by_ref, contained, med])
    keys = {e.key for e in chart.with_code(RXNORM, "6813")}
    assert keys == {"MedicationRequest/mr1", "MedicationStatement/ms1", "Medication/m1"}


def test_identical_duplicates_are_merged() -> None:
    cond = condition("c1", ICD, "F11.20")
    chart = Chart.from_resources([cond, copy.deepcopy(cond)])
    assert len(chart) == 1


BAD_INPUTS: list[tuple[Any, str]] = [
    ([1, 2], "expected a FHIR resource"),
    ({"resourceType": "Patient", "id": "p"}, "expected a FHIR Bundle, got 'Patient'"),
    ("text", "expected a FHIR Bundle"),
    ({"resourceType": "Bundle", "type": "history", "entry": []}, "unsupported Bundle type"),
    (
        {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "x"}]},
        "entry[0]: entry has no resource",
    ),
    (
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"id": "x"}}]},
        "has no resourceType",
    ),
    (
        {"resourceType": "Bundle", "type": "collection", "entry": {"resource": PATIENT}},
        "entry: expected a list",
    ),
    (
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": "https://ehr.example/fhir?page=2"}],
        },
        "incomplete",
    ),
    (
        {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [{"response": {"status": "403 Forbidden"}}],
        },
        "failed with status '403 Forbidden'",
    ),
    (
        bundle(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "processing", "diagnostics": "timeout"}],
            }
        ),
        "OperationOutcome reports an error: timeout",
    ),
    (
        bundle(PATIENT, condition("c1", ICD, "F11.20", subject={"reference": "Patient/other"})),
        "more than one patient",
    ),
    (
        bundle(
            {
                "resourceType": "MedicationRequest",
                "id": "mr",
                "status": "active",
                "medicationReference": {"reference": "Medication/missing"},
            }
        ),
        "medicationReference 'Medication/missing' is not in the chart",
    ),
    (
        bundle(condition("c1", ICD, "F11.20"), condition("c1", ICD, "F11.21")),
        "Condition/c1 appears twice with different content",
    ),
    (bundle({"resourceType": "Condition"}), "Condition has no id"),
]


@pytest.mark.parametrize(("data", "message"), BAD_INPUTS)
def test_malformed_input_raises_chart_error_naming_the_problem(data: Any, message: str) -> None:
    with pytest.raises(ChartError, match=None) as info:
        if isinstance(data, list):
            Chart.from_resources(data)
        else:
            Chart.from_bundle(data)
    assert message in str(info.value)


def test_information_outcomes_are_ignored() -> None:
    chart = Chart.from_bundle(
        bundle(
            PATIENT, {"resourceType": "OperationOutcome", "issue": [{"severity": "information"}]}
        )
    )
    assert len(chart) == 1


def _synthea_files() -> list[str]:
    return sorted(p.name for p in SYNTHEA.glob("*.json"))


def test_synthea_transaction_bundles_all_load_and_evaluate(pack: Pack) -> None:
    """All 100 Synthea charts: urn:uuid references resolve, every ED visit evaluates."""
    files = _synthea_files()
    assert len(files) == 100
    evaluated = 0
    for name in files:
        chart = Chart.from_bundle(json.loads((SYNTHEA / name).read_text()))
        assert chart.patient is not None
        for enc in chart.encounters:
            if enc["class"]["code"] == "EMER":
                evaluate(chart, NOW, pack, enc["id"])
                evaluated += 1
    assert evaluated > 200


def test_synthea_overdose_visit_replayed_at_its_time(pack: Pack) -> None:
    """A living Synthea patient's overdose ED visit: coach consult with urn:uuid evidence."""
    from smartapp.engine.fhir import parse_datetime

    found = 0
    for name in _synthea_files():
        data = json.loads((SYNTHEA / name).read_text())
        chart = Chart.from_bundle(data)
        if chart.patient is None or "deceasedDateTime" in chart.patient:
            continue
        for entry in chart.with_code("http://snomed.info/sct", "55680006"):
            enc_key = entry.encounter
            enc = chart.entry(enc_key) if enc_key else None
            if enc is None or enc.resource["class"]["code"] != "EMER" or enc.time is None:
                continue
            birth = parse_datetime(chart.patient["birthDate"])
            if birth is None or (enc.time - birth).days < 19 * 366:
                continue
            result = evaluate(chart, enc.time, pack, enc.resource["id"])
            kinds = {s.kind: s for s in result.suggestions}
            assert "prc-consult" in kinds
            assert entry.key in kinds["prc-consult"].evidence
            assert entry.key.startswith("Condition/") and "urn:" not in entry.key
            found += 1
    assert found >= 1
