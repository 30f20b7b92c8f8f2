"""Reading an EHR's answers for chart completeness, without a server: OperationOutcomes that
say records were left out of a search (R4 outcome entries, R5 Bundle.issues, a batch
entry's response.outcome) mark that type unread with the EHR's reason; hints and other
warnings do not. (Over HTTP, with the sandbox producing them: tests/app/
test_fetch_completeness.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from smartapp.fhir.chart import (
    ChartLimits,
    _ChartReader,
    bundle_outcomes,
    withheld_reasons,
)

pytestmark = pytest.mark.unit

PART2 = "2 record(s) withheld: consent required to disclose them (42 CFR Part 2)"


def outcome(*issues: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


SUPPRESSED = outcome({"severity": "warning", "code": "suppressed", "diagnostics": PART2})


def searchset(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": list(entries), **extra}


def match(rtype: str, rid: str) -> dict[str, Any]:
    return {"resource": {"resourceType": rtype, "id": rid}, "search": {"mode": "match"}}


def as_outcome_entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "search": {"mode": "outcome"}}


class OfflineClient:
    """What the reader takes from a client; these tests never let it fetch."""

    base = "http://ehr.invalid/fhir"
    timeout = (1.0, 1.0)

    def headers(self) -> dict[str, str]:
        raise AssertionError("no request in these tests")


def reader() -> _ChartReader:
    return _ChartReader(OfflineClient(), ChartLimits())  # type: ignore[arg-type]


def test_withheld_reasons_name_the_code_and_the_ehrs_words() -> None:
    assert withheld_reasons(SUPPRESSED) == [f"suppressed: {PART2}"]
    detailed = outcome(
        {"severity": "information", "code": "suppressed", "details": {"text": "restricted"}}
    )
    assert withheld_reasons(detailed) == ["suppressed: restricted"]
    for code in ("incomplete", "too-costly", "throttled"):
        assert withheld_reasons(outcome({"severity": "warning", "code": code})) == [code]
    # an error in an answer that was given all the same: something is missing
    assert withheld_reasons(outcome({"severity": "error", "code": "exception"})) == ["exception"]


def test_hints_and_other_warnings_are_not_withheld_records() -> None:
    ignored = outcome(
        {"severity": "warning", "code": "not-supported", "diagnostics": "_sort ignored"},
        {"severity": "information", "code": "informational"},
    )
    assert withheld_reasons(ignored) == []
    for not_an_outcome in (None, "suppressed", {"resourceType": "Patient"}, {"issue": "x"}):
        assert withheld_reasons(not_an_outcome) == []
    assert withheld_reasons(outcome("not an issue", {"code": 5})) == []


def test_a_long_reason_is_bounded() -> None:
    long = outcome({"severity": "warning", "code": "suppressed", "diagnostics": "x" * 5000})
    (reason,) = withheld_reasons(long)
    assert len(reason) == 201 and reason.endswith("…")


def test_bundle_outcomes_r4_entries_and_r5_issues() -> None:
    r4 = searchset(match("Condition", "a"), as_outcome_entry(SUPPRESSED))
    assert bundle_outcomes(r4) == [SUPPRESSED]
    r5 = searchset(match("Condition", "a"), issues=SUPPRESSED)
    assert bundle_outcomes(r5) == [SUPPRESSED]
    assert bundle_outcomes(searchset(match("Condition", "a"))) == []
    assert bundle_outcomes({"resourceType": "Bundle", "entry": "not a list"}) == []


@pytest.mark.parametrize(
    "bundle",
    [
        searchset(match("MedicationStatement", "m1"), as_outcome_entry(SUPPRESSED)),
        searchset(match("MedicationStatement", "m1"), issues=SUPPRESSED),
    ],
    ids=["outcome-entry", "bundle-issues"],
)
def test_a_search_with_records_withheld_is_incomplete(bundle: dict[str, Any]) -> None:
    chart = reader()
    chart._search(None, bundle, "MedicationStatement")
    result = chart.finish()
    assert [r["id"] for r in result.resources] == ["m1"]  # what was given is read
    assert result.incomplete == {"MedicationStatement"}
    (notice,) = result.notices
    assert "withheld some MedicationStatement records" in notice and "42 CFR Part 2" in notice


def test_a_batch_entry_outcome_says_records_were_withheld() -> None:
    answer = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {
                "resource": searchset(match("Condition", "c1")),
                "response": {"status": "200 OK", "outcome": SUPPRESSED},
            },
            {"resource": searchset(match("Encounter", "e1")), "response": {"status": "200 OK"}},
        ],
    }
    chart = reader()
    chart._batch_results(["Condition?patient=p", "Encounter?patient=p"], answer)
    result = chart.finish()
    assert result.incomplete == {"Condition"}
    assert {r["id"] for r in result.resources} == {"c1", "e1"}


def test_a_complete_search_is_complete() -> None:
    chart = reader()
    hint = outcome({"severity": "information", "code": "informational", "diagnostics": "ok"})
    chart._search(None, searchset(match("Condition", "c1"), as_outcome_entry(hint)), "Condition")
    result = chart.finish()
    assert (result.incomplete, result.notices) == (set(), [])


def test_a_page_that_is_not_a_bundle_is_unread() -> None:
    """An EHR answering a search with an OperationOutcome (HTTP 200): nothing read, and the
    type unread with what it said, never an empty and complete search."""
    chart = reader()
    chart._search(None, SUPPRESSED, "AllergyIntolerance")
    result = chart.finish()
    assert result.resources == [] and result.incomplete == {"AllergyIntolerance"}
    assert any("not a Bundle" in n for n in result.notices)
    assert any("42 CFR Part 2" in n for n in result.notices)


def test_a_fhir_clients_repr_never_shows_its_token():
    """A client in a log line, an error message or a traceback does not leak its token."""
    from smartapp.fhir.client import FhirClient

    client = FhirClient("https://ehr.example/fhir", "secret-token-value")
    assert "secret-token-value" not in repr(client) and "ehr.example" in repr(client)
