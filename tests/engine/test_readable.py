"""Issue 9 items 27-28, in the engine: a chart with malformed resources is evaluated from what
can be read, and each resource left out (or element ignored) is named; long texts are cut."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from smartapp.engine import Chart, ChartError, Pack, evaluate
from smartapp.engine.chart import MultiplePatientsError
from smartapp.engine.readable import cut_text, readable_chart

from .helpers import EXPECTED, NOW, SCENARIOS

P01 = json.loads((SCENARIOS / "P01-oud-withdrawal.json").read_text())
P01_KINDS = ["prc-consult", "moud-buprenorphine", "naloxone-kit"]


def p01_resources() -> list[dict[str, Any]]:
    """P01's resources as an EHR's searches return them (a list, no fullUrls)."""
    return [copy.deepcopy(e["resource"]) for e in P01["entry"]]


def of_type(resources: list[Any], rtype: str) -> dict[str, Any]:
    return next(r for r in resources if isinstance(r, dict) and r["resourceType"] == rtype)


def set_element(rtype: str, name: str, value: Any) -> Callable[[list[Any]], None]:
    def change(resources: list[Any]) -> None:
        of_type(resources, rtype)[name] = value

    return change


def condition_coding_string(resources: list[Any]) -> None:
    of_type(resources, "Condition")["code"]["coding"] = "F11.20"


def condition_code_list(resources: list[Any]) -> None:
    condition = of_type(resources, "Condition")
    condition["code"] = [condition["code"]]


def resource_a_string(resources: list[Any]) -> None:
    resources.append("Condition/oops")


def nested_bundle_entry_a_dict(resources: list[Any]) -> None:
    resources.append(
        {"resourceType": "Bundle", "id": "b1", "type": "searchset", "entry": {"resource": {}}}
    )


def kinds(result) -> list[str]:
    return [s.kind for s in result.suggestions]


# (name, change, notice expected, kinds still suggested)
IGNORED_IN_CONTEXT = [
    (
        "patient-name-string",
        set_element("Patient", "name", "Test P01"),
        "Patient/P01-pt: name is not a list of HumanNames; Handoff ignored that element.",
        P01_KINDS,
    ),
    (
        "patient-name-dict",
        set_element("Patient", "name", {"family": "P01"}),
        "Patient/P01-pt: name is not a list of HumanNames",
        P01_KINDS,
    ),
    (
        "identifier-dict",
        set_element("Patient", "identifier", {"value": "MRN1"}),
        "Patient/P01-pt: identifier is not a list of Identifiers",
        P01_KINDS,
    ),
    (
        "birthdate-number",
        set_element("Patient", "birthDate", 1990),
        "Patient/P01-pt: birthDate is not a FHIR date (the age is unknown: suggestions with an "
        "age limit are not made)",
        ["naloxone-kit"],
    ),
    (
        "period-string",
        set_element("Encounter", "period", "2026-11-20T10:00:00Z"),
        "Encounter/P01-enc: period is not a Period (the visit's start is unknown)",
        P01_KINDS,
    ),
]
LEFT_OUT = [
    (
        "condition-code-list",
        condition_code_list,
        "Condition/P01-cond1 could not be read and was left out: code is not a CodeableConcept.",
    ),
    (
        "condition-coding-string",
        condition_coding_string,
        "Condition/P01-cond1 could not be read and was left out: code is not a CodeableConcept "
        "(coding is not a list of Codings).",
    ),
    (
        "resource-a-string",
        resource_a_string,
        "Item 5 of the chart could not be read and was left out: it is not a FHIR resource.",
    ),
    (
        "bundle-entry-a-dict",
        nested_bundle_entry_a_dict,
        "Bundle/b1 could not be read and was left out: a Bundle inside a search result is not "
        "read.",
    ),
]


@pytest.mark.parametrize(
    ("change", "notice", "expected"),
    [pytest.param(c, n, k, id=name) for name, c, n, k in IGNORED_IN_CONTEXT],
)
def test_unreadable_element_of_the_patient_or_visit_is_ignored_and_named(
    pack: Pack, change, notice: str, expected: list[str]
) -> None:
    resources = p01_resources()
    change(resources)
    readable = readable_chart(resources)
    result = evaluate(readable.chart, NOW, pack, encounter_id="P01-enc")
    assert any(n.startswith(notice) for n in readable.notices), readable.notices
    assert len(readable.notices) == 1
    assert kinds(result) == expected
    assert readable.incomplete_types == set()  # nothing was left out
    assert len(readable.chart) == 4


@pytest.mark.parametrize(
    ("change", "notice"), [pytest.param(c, n, id=name) for name, c, n in LEFT_OUT]
)
def test_unreadable_resource_is_left_out_and_named_the_rest_evaluated(
    pack: Pack, change, notice: str
) -> None:
    resources = p01_resources()
    change(resources)
    readable = readable_chart(resources)
    result = evaluate(readable.chart, NOW, pack, encounter_id="P01-enc")
    assert readable.notices == [notice]
    assert readable.chart.patient["id"] == "P01-pt"
    if "Condition/P01-cond1" in notice:
        # The OUD diagnosis is the one unreadable resource: nothing rests on it any more,
        # and the notice says so (before, the diagnosis vanished without a word).
        assert readable.incomplete_types == {"Condition"}
        assert kinds(result) == []
    else:
        assert kinds(result) == P01_KINDS  # the OUD diagnosis is still found


def test_before_the_fix_a_malformed_code_vanished_silently(pack: Pack) -> None:
    """What item 27 reported: the strict chart takes a list as code and finds no diagnosis."""
    resources = p01_resources()
    condition_code_list(resources)
    assert kinds(evaluate(Chart.from_resources(resources), NOW, pack, "P01-enc")) == []
    assert readable_chart(resources).notices  # now it is named


@pytest.mark.parametrize(
    ("resource", "problem"),
    [
        (
            {"clinicalStatus": ["active"]},
            "clinicalStatus is not a code or a CodeableConcept with a code",
        ),
        (
            {"verificationStatus": {"coding": "confirmed"}},
            "verificationStatus is not a code or a CodeableConcept with a code",
        ),
        ({"clinicalStatus": {}}, "clinicalStatus is not a code or a CodeableConcept with a code"),
        (
            {"verificationStatus": {"text": "refuted"}},
            "verificationStatus is not a code or a CodeableConcept with a code",
        ),
        ({"onsetDateTime": 20261120}, "onsetDateTime is not a FHIR dateTime"),
        ({"onsetDateTime": "last week"}, "onsetDateTime is not a FHIR dateTime"),
        ({"subject": "Patient/P01-pt"}, "subject is not a Reference"),
        (
            {"encounter": {"reference": ["Encounter/P01-enc"]}},
            "encounter is not a Reference (reference is not a string)",
        ),
        ({"id": 7}, "its id is not a FHIR id"),
        ({"id": "x" * 5000}, "its id is not a FHIR id"),
        (
            {"code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": 1120}]}},
            "code is not a CodeableConcept (coding is not a list of Codings)",
        ),
    ],
)
def test_every_element_the_rules_read_is_checked(resource: dict, problem: str) -> None:
    resources = p01_resources()
    of_type(resources, "Condition").update(resource)
    readable = readable_chart(resources)
    assert len(readable.unreadable) == 1
    assert problem in readable.notices[0]
    assert readable.chart.of_type("Condition") == ()


def test_medication_order_whose_medication_is_missing_is_left_out_not_a_chart_error() -> None:
    resources = p01_resources() + [
        {
            "resourceType": "MedicationRequest",
            "id": "mr1",
            "status": "active",
            "subject": {"reference": "Patient/P01-pt"},
            "medicationReference": {"reference": "Medication/gone"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": "mr2",
            "status": "active",
            "subject": {"reference": "Patient/P01-pt"},
            "medicationReference": "methadone",
        },
    ]
    readable = readable_chart(resources)
    assert readable.notices == [
        "MedicationRequest/mr2 could not be read and was left out: "
        "medicationReference is not a Reference.",
        "MedicationRequest/mr1 could not be read and was left out: "
        "the Medication it references is not in the chart.",
    ]
    assert readable.incomplete_types == {"MedicationRequest"}
    assert readable.chart.get("MedicationRequest/mr1") is None


def test_two_different_versions_of_one_resource_are_both_left_out() -> None:
    resources = p01_resources()
    second = copy.deepcopy(of_type(resources, "Observation"))
    second["valueInteger"] = 3
    readable = readable_chart([*resources, second])
    assert readable.notices == [
        "Observation/P01-cows2 could not be read and was left out: "
        "it appears twice with different content."
    ]
    assert readable.chart.of_type("Observation") == ()


def test_deeply_nested_resource_is_left_out_without_recursion_errors() -> None:
    nested: dict[str, Any] = {}
    for _ in range(5000):
        nested = {"extension": [nested]}
    resources = p01_resources()
    of_type(resources, "Observation")["note"] = [nested]
    readable = readable_chart(resources)
    assert readable.notices == [
        "Observation/P01-cows2 could not be read and was left out: "
        "it is nested deeper than 32 levels."
    ]


def test_a_five_megabyte_text_is_cut_with_its_length_and_hash(pack: Pack) -> None:
    resources = p01_resources()
    huge = "opioid use disorder " * 262_144  # 5 MiB
    of_type(resources, "Condition")["code"]["text"] = huge
    readable = readable_chart(resources, text_limit=300)
    condition = readable.chart.get("Condition/P01-cond1")
    digest = hashlib.sha256(huge.encode()).hexdigest()
    assert condition["code"]["text"] == (
        huge[:300] + f"… [cut: {len(huge):,} characters in all; sha256 {digest}]"
    )
    assert readable.notices == [
        "Condition/P01-cond1: a text longer than 300 characters cut for the screen and the log "
        "(marked with the full text's length and SHA-256)."
    ]
    assert kinds(evaluate(readable.chart, NOW, pack, "P01-enc")) == P01_KINDS  # codes intact
    assert of_type(resources, "Condition")["code"]["text"] == huge  # the input is not changed


def test_cut_text_leaves_short_texts_alone() -> None:
    assert cut_text("short", 5) == "short"
    assert cut_text("longer", 5).startswith("longe… [cut: 6 characters in all; sha256 ")


def test_a_readable_chart_is_the_strict_chart() -> None:
    resources = p01_resources()
    readable = readable_chart(resources)
    assert readable.notices == []
    strict = Chart.from_resources(resources)
    assert [e.resource for e in readable.chart.of_all()] == [e.resource for e in strict.of_all()]


def test_past_the_notice_limit_the_rest_is_counted_by_type() -> None:
    resources = p01_resources()
    resources += [
        {"resourceType": "Condition", "id": f"bad{i}", "code": "F11.20"} for i in range(30)
    ]
    resources += [{"resourceType": "Observation", "id": f"obs{i}", "status": 1} for i in range(5)]
    readable = readable_chart(resources, notice_limit=10)
    assert len(readable.unreadable) == 35
    assert len(readable.notices) == 10
    assert readable.notices[0].startswith("Condition/bad0 could not be read")
    assert readable.notices[-1] == (
        "26 more resources could not be read in full (Condition: 21, Observation: 5)."
    )
    assert readable.incomplete_types == {"Condition", "Observation"}


def test_an_operation_outcome_is_read_as_before() -> None:
    """Information passes (with or without an id); an error still fails the read, its
    diagnostics bounded; an `issue` that is not a list is no crash."""
    info = {"resourceType": "OperationOutcome", "issue": [{"severity": "information"}]}
    odd = {"resourceType": "OperationOutcome", "issue": 7}
    readable = readable_chart([*p01_resources(), info, odd])
    assert readable.notices == []
    error = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "x" * 100_000}],
    }
    with pytest.raises(ChartError) as failed:
        readable_chart([*p01_resources(), error])
    assert len(str(failed.value)) < 300


HOSTILE_VALUES = ["x", 7, True, None, [], {}, ["x"], [{}], {"x": 1}, "y" * 2000]


def _paths(value: Any, prefix: tuple = ()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _at(root: Any, path: tuple) -> Any:
    for key in path:
        root = root[key]
    return root


def _outcome(result) -> list:
    return sorted((s.kind, s.variant, s.evidence, s.cautions) for s in result.suggestions)


@pytest.mark.parametrize(
    "scenario",
    ["P01-oud-withdrawal", "P03-on-methadone", "P07-bup-allergy", "P12-overdose-naloxone-given"],
)
def test_any_element_of_the_wrong_shape_is_never_a_crash_nor_a_silent_change(
    pack: Pack, scenario: str
) -> None:
    """Every element of a scenario's resources, in turn, given each hostile value: the chart
    is read, evaluated, described and bannered without an exception, and where the value has
    another JSON type than before and the suggestions change, a notice says why."""
    from smartapp.screen.describe import demographics, describe, in_words, patient_banner

    chart = json.loads((SCENARIOS / f"{scenario}.json").read_text())
    base = [e["resource"] for e in chart["entry"]]
    visit = EXPECTED["cases"][scenario]["encounter"]
    before = _outcome(evaluate(readable_chart(base).chart, NOW, pack, visit))
    for i, resource in enumerate(base):
        for path in list(_paths(resource)):
            if path in ((), ("resourceType",)):
                continue
            original = _at(resource, path)
            for value in HOSTILE_VALUES:
                resources = copy.deepcopy(base)
                _at(resources[i], path[:-1])[path[-1]] = value
                try:
                    readable = readable_chart(resources)
                except MultiplePatientsError:
                    # a patient id that is not the subjects': a clear error page, not a guess
                    assert path == ("id",) or path[0] in ("subject", "patient")
                    continue
                if path == ("id",) and resource["id"] == visit:
                    continue  # the visit itself left out: a clear "not in the chart" page
                result = evaluate(readable.chart, NOW, pack, visit)
                for suggestion in result.suggestions:
                    for ref in suggestion.evidence:
                        in_words(describe(readable.chart.get(ref), ref))
                patient_banner(result.patient or {})
                demographics(result.patient or {}, NOW)
                status_string = path[-1] in ("clinicalStatus", "verificationStatus") and (
                    isinstance(value, str)  # read as a code, like any unknown code: content
                )
                if type(value) is not type(original) and not status_string:
                    changed = _outcome(result) != before
                    assert readable.notices or not changed, (path, value)
