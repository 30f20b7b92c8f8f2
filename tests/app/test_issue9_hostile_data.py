"""Issue 9 items 27 and 28 end to end: an EHR that answers the chart read with malformed or
oversized data. A real fault proxy in front of the sandbox answers Handoff's chart batch with
the sandbox's own answer for P01, changed; Handoff is launched for real and shows its screen.

27: a resource that cannot be read is left out with a notice naming it, the rest is
    evaluated, nothing is a 500; the notices go to the log, without PHI.
28: request bodies, one resource's text (on the screen and in the log) and the chart's size
    are bounded, each with a notice.
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import Database
from smartapp.fhir.chart import chart_searches
from tests import launch_flow
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.smart_helpers import token_for
from tests.stacks import start_stack

PATIENT = "P01-pt"
HOSTILE_NAME = "Hostile Name 7f3a"  # must never reach the log


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(tmp_path_factory.mktemp("hostile"), shared_dir, proxy=True)
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def no_leftover_faults(stack) -> Iterator[None]:
    stack.proxy.clear_faults()
    yield
    stack.proxy.clear_faults()


def real_answer(stack, patient: str) -> dict:
    """The sandbox's answer to the chart batch Handoff sends for a patient (same searches)."""
    token = token_for(stack.ehr_url, patient, TEST_READER, TEST_READER_REDIRECT)
    searches = chart_searches(patient, token.get("encounter"), datetime.now(UTC), 30)
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": url}} for url in searches],
    }
    answer = requests.post(
        f"{stack.ehr_url}/fhir",
        json=batch,
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )
    answer.raise_for_status()
    body = answer.json()
    assert len(body["entry"]) == len(searches)
    return body


@pytest.fixture(scope="module")
def p01_answer(stack) -> dict:
    """P01's chart as the sandbox answers it (P01 is never signed here: it stays unsigned)."""
    return real_answer(stack, PATIENT)


# -- the answer, changed ---------------------------------------------------------------------


def search_of(answer: dict, rtype: str) -> dict:
    """The batch entry of the first search (or read) of a resource type."""
    for entry in answer["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == rtype:
            return entry
        if resource["resourceType"] == "Bundle" and any(
            e["resource"]["resourceType"] == rtype for e in resource.get("entry", [])
        ):
            return entry
    raise AssertionError(f"no {rtype} in the answer")


def resource_of(answer: dict, rtype: str) -> dict:
    resource = search_of(answer, rtype)["resource"]
    if resource["resourceType"] == rtype:
        return resource
    return next(e["resource"] for e in resource["entry"] if e["resource"]["resourceType"] == rtype)


def set_element(rtype: str, name: str, value) -> Callable[[dict], None]:
    def change(answer: dict) -> None:
        resource_of(answer, rtype)[name] = value

    return change


def condition_code_a_list(answer: dict) -> None:
    condition = resource_of(answer, "Condition")
    condition["code"] = [condition["code"]]


def condition_coding_a_string(answer: dict) -> None:
    resource_of(answer, "Condition")["code"]["coding"] = "F11.20"


def entry_a_dict(rtype: str) -> Callable[[dict], None]:
    def change(answer: dict) -> None:
        searchset = search_of(answer, rtype)["resource"]
        searchset["entry"] = searchset["entry"][0]

    return change


def searchset_resource_a_string(rtype: str) -> Callable[[dict], None]:
    def change(answer: dict) -> None:
        search_of(answer, rtype)["resource"]["entry"][0]["resource"] = "oops"

    return change


def batch_resource_a_string(answer: dict) -> None:
    search_of(answer, "Patient")["resource"] = "Patient/P01-pt"


P01_KINDS = ["prc-consult", "moud-buprenorphine", "naloxone-kit"]
# (id, change, notice naming what was not read, suggestions still made)
CASES = [
    (
        "patient-name-string",
        set_element("Patient", "name", HOSTILE_NAME),
        "Patient/P01-pt: name is not a list of HumanNames; Handoff ignored that element.",
        P01_KINDS,
    ),
    (
        "patient-name-dict",
        set_element("Patient", "name", {"text": HOSTILE_NAME}),
        "Patient/P01-pt: name is not a list of HumanNames",
        P01_KINDS,
    ),
    (
        "identifier-dict",
        set_element("Patient", "identifier", {"value": "MRN-7f3a"}),
        "Patient/P01-pt: identifier is not a list of Identifiers",
        P01_KINDS,
    ),
    (
        "birthdate-number",
        set_element("Patient", "birthDate", 19900101),
        "Patient/P01-pt: birthDate is not a FHIR date (the age is unknown",
        ["naloxone-kit"],
    ),
    (
        "encounter-period-string",
        set_element("Encounter", "period", "2026-11-20T10:00:00Z"),
        "Encounter/P01-enc: period is not a Period (the visit's start is unknown)",
        P01_KINDS,
    ),
    (
        "observation-bundle-entry-dict",
        entry_a_dict("Observation"),
        "Part of the EHR's Observation answer could not be read and was left out: "
        "its Bundle.entry is not a list",
        None,
    ),
    (
        "condition-bundle-entry-dict",
        entry_a_dict("Condition"),
        "Part of the EHR's Condition answer could not be read and was left out: "
        "its Bundle.entry is not a list",
        [],
    ),
    (
        "entry-resource-string",
        searchset_resource_a_string("Condition"),
        "Part of the EHR's Condition answer could not be read and was left out: "
        "entry 1 has no FHIR resource",
        [],
    ),
    (
        "batch-entry-resource-string",
        batch_resource_a_string,
        "Part of the EHR's Patient answer could not be read and was left out: "
        "the resource it sent is not a FHIR resource",
        ["naloxone-kit"],
    ),
    (
        "condition-code-list",
        condition_code_a_list,
        "Condition/P01-cond1 could not be read and was left out: code is not a CodeableConcept.",
        [],
    ),
    (
        "condition-coding-string",
        condition_coding_a_string,
        "Condition/P01-cond1 could not be read and was left out: code is not a CodeableConcept "
        "(coding is not a list of Codings).",
        [],
    ),
]


def launch_with_answer(stack, answer: dict, patient: str = PATIENT) -> launch_flow.Launch:
    """Launch Handoff for a patient; its chart batch gets `answer` from the proxy."""
    launch = launch_flow.authorize(launch_flow.start(stack.app.url, stack.ehr_url, patient))
    stack.proxy.add_fault(
        "status",
        method="POST",
        path="/fhir",
        status=200,
        body=json.dumps(answer),
        headers={"Content-Type": "application/fhir+json"},
    )
    launch_flow.finish(launch)
    return launch


def suggested(page: str) -> list[str]:
    return re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', page)


def notices(page: str) -> list[str]:
    return [
        html.unescape(n)
        for n in re.findall(r'<section class="notice" role="note"><p>(.*?)</p>', page, re.S)
    ]


def log_events(stack, type_: str) -> list[LogEvent]:
    with Database(stack.database_url).session() as session:
        return list(session.scalars(select(LogEvent).where(LogEvent.type == type_)))


@pytest.mark.parametrize(
    ("change", "notice", "kinds"), [pytest.param(c, n, k, id=i) for i, c, n, k in CASES]
)
def test_malformed_chart_data_is_named_and_the_rest_evaluated(
    stack, p01_answer, change, notice: str, kinds: list[str] | None
) -> None:
    answer = copy.deepcopy(p01_answer)
    change(answer)
    launch = launch_with_answer(stack, answer)
    page = launch.final.text
    assert launch.final.status_code == 200, page[:500]
    shown = notices(page)
    assert any(n.startswith(notice) for n in shown), shown
    if kinds is not None:
        assert suggested(page) == kinds
    if "prc-consult" in (kinds or []):
        assert "Condition/P01-cond1" in page  # the OUD diagnosis, still found, is the evidence
    if "Suggestions may be incomplete" in " ".join(shown) and "Condition" in notice:
        assert "prc-consult" not in suggested(page)
    assert HOSTILE_NAME not in page or "name" not in notice  # an unreadable name is not shown
    # The notices are logged with what was shown, and without the hostile content.
    event = log_events(stack, "suggestions-shown")[-1]
    assert any(n.startswith(notice) for n in event.data["notices"])
    assert HOSTILE_NAME not in json.dumps(event.data)


def test_an_unreadable_medication_order_makes_the_chart_incomplete(stack, p01_answer) -> None:
    """A MedicationRequest left out could be methadone. Clinical rules v2 (chart
    completeness): buprenorphine is still suggested, decided in the engine, with the
    chart-incomplete caution and the notice naming the medication list."""
    answer = copy.deepcopy(p01_answer)
    search = search_of(answer, "Condition")["resource"]  # any searchset holds it as well
    search["entry"].append(
        {
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "hostile-mr",
                "status": "active",
                "subject": {"reference": f"Patient/{PATIENT}"},
                "medicationCodeableConcept": "methadone 10 mg",
            }
        }
    )
    launch = launch_with_answer(stack, answer)
    assert launch.final.status_code == 200
    shown = notices(launch.final.text)
    assert (
        "MedicationRequest/hostile-mr could not be read and was left out: "
        "medicationCodeableConcept is not a CodeableConcept." in shown
    )
    assert any(
        n.startswith("The EHR did not let Handoff read: MedicationRequest")
        and "ask about methadone" in n
        for n in shown
    )
    assert suggested(launch.final.text) == ["prc-consult", "moud-buprenorphine", "naloxone-kit"]
    assert 'data-caution="chart-incomplete"' in launch.final.text


def add_to_condition_search(resource: dict) -> Callable[[dict], None]:
    """The chart does not care which search returned a resource: any searchset holds it."""

    def change(answer: dict) -> None:
        search_of(answer, "Condition")["resource"]["entry"].append({"resource": resource})

    return change


def set_in(rtype: str, path: tuple, value) -> Callable[[dict], None]:
    def change(answer: dict) -> None:
        target = resource_of(answer, rtype)
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def batch_response_a_string(answer: dict) -> None:
    search_of(answer, "Condition")["response"] = "200 OK"


def searchset_link_odd(answer: dict) -> None:
    search_of(answer, "Condition")["resource"]["link"] = {"relation": "next", "url": 7}


def searchset_entry_search_odd(answer: dict) -> None:
    search_of(answer, "Condition")["resource"]["entry"][0]["search"] = "match"


def fewer_answers_than_searches(answer: dict) -> None:
    del answer["entry"][-1]


MORE = [
    ("gender-number", set_element("Patient", "gender", 1)),
    ("deceased-string", set_element("Patient", "deceasedBoolean", "false")),
    ("extension-dict", set_element("Patient", "extension", {"url": "x"})),
    (
        "race-extension-odd",
        set_element(
            "Patient",
            "extension",
            [
                {
                    "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                    "extension": "White",
                }
            ],
        ),
    ),
    ("encounter-class-string", set_element("Encounter", "class", "EMER")),
    ("encounter-status-number", set_element("Encounter", "status", 3)),
    ("encounter-period-start-number", set_element("Encounter", "period", {"start": 1})),
    ("condition-subject-string", set_element("Condition", "subject", "Patient/P01-pt")),
    ("condition-status-list", set_element("Condition", "clinicalStatus", ["active"])),
    ("condition-onset-object", set_element("Condition", "onsetDateTime", {"when": "now"})),
    ("condition-id-number", set_element("Condition", "id", 12)),
    ("condition-id-object", set_element("Condition", "id", {"value": "c1"})),
    ("condition-resource-type-number", set_element("Condition", "resourceType", 5)),
    ("coding-code-number", set_in("Condition", ("code", "coding", 0, "code"), 1120)),
    ("observation-quantity-string", set_element("Observation", "valueQuantity", "11")),
    ("observation-value-text", set_in("Observation", ("valueQuantity",), {"value": "11"})),
    ("observation-interpretation-dict", set_element("Observation", "interpretation", {})),
    ("observation-effective-number", set_element("Observation", "effectiveDateTime", 5)),
    (
        "medication-reference-string",
        add_to_condition_search(
            {
                "resourceType": "MedicationRequest",
                "id": "m1",
                "status": "active",
                "medicationReference": "Medication/x",
            }
        ),
    ),
    (
        "medication-reference-number",
        add_to_condition_search(
            {
                "resourceType": "MedicationRequest",
                "id": "m2",
                "status": "active",
                "medicationReference": {"reference": 42},
            }
        ),
    ),
    (
        "contained-dict",
        add_to_condition_search(
            {
                "resourceType": "MedicationRequest",
                "id": "m3",
                "status": "active",
                "medicationReference": {"reference": "#med"},
                "contained": {"id": "med"},
            }
        ),
    ),
    (
        "nested-bundle",
        add_to_condition_search(
            {"resourceType": "Bundle", "id": "b", "type": "searchset", "entry": "x"}
        ),
    ),
    ("entry-not-object", add_to_condition_search("x")),
    ("link-not-a-list", searchset_link_odd),
    ("fewer-answers-than-searches", fewer_answers_than_searches),
    ("batch-response-a-string", batch_response_a_string),
]


@pytest.mark.parametrize("change", [pytest.param(c, id=i) for i, c in MORE])
def test_no_malformed_answer_is_a_500(stack, p01_answer, change) -> None:
    """More of the 30 hostile answers: each gets the screen with a notice naming what was not
    read, or (an answer that is not a batch-response at all) a clear error page."""
    answer = copy.deepcopy(p01_answer)
    change(answer)
    launch = launch_with_answer(stack, answer)
    page = launch.final.text
    assert launch.final.status_code in (200, 502), page[:500]
    if launch.final.status_code == 502:
        assert "The chart could not be read" in page
    else:
        assert notices(page), "a malformed answer was read without a word"


def test_an_unreadable_search_mode_reads_as_a_match(stack, p01_answer) -> None:
    """`entry.search` that is not an object loses nothing: the entry is read as a match."""
    answer = copy.deepcopy(p01_answer)
    searchset_entry_search_odd(answer)
    launch = launch_with_answer(stack, answer)
    assert launch.final.status_code == 200
    assert suggested(launch.final.text) == P01_KINDS


def test_an_order_whose_medication_the_ehr_does_not_have_is_named(stack, p01_answer) -> None:
    """The Medication read is refused (404 in the batch): the order is left out and named
    instead of the whole chart failing; the medication list is incomplete, so buprenorphine
    carries the chart-incomplete caution (clinical rules v2)."""
    answer = copy.deepcopy(p01_answer)
    add_to_condition_search(
        {
            "resourceType": "MedicationRequest",
            "id": "needs-med",
            "status": "active",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "medicationReference": {"reference": "Medication/not-in-this-ehr"},
        }
    )(answer)
    launch = launch_with_answer(stack, answer)
    assert launch.final.status_code == 200, launch.final.text[:300]
    shown = notices(launch.final.text)
    assert (
        "MedicationRequest/needs-med could not be read and was left out: "
        "the Medication it references is not in the chart." in shown
    )
    assert "moud-buprenorphine" in suggested(launch.final.text)
    assert 'data-caution="chart-incomplete"' in launch.final.text


def test_a_batch_that_is_not_a_bundle_is_a_clear_error_page(stack, p01_answer) -> None:
    answer = copy.deepcopy(p01_answer)
    answer["entry"] = {"oops": True}
    launch = launch_with_answer(stack, answer)
    assert launch.final.status_code == 502
    assert "The chart could not be read" in launch.final.text
    assert "not a Bundle Handoff can read" in launch.final.text


# -- item 28: sizes ----------------------------------------------------------------------------


def test_a_five_megabyte_condition_text_is_cut_on_the_page_and_in_the_log(stack) -> None:
    """Signed to see the decision's log event: on P02, so P01 stays unsigned for the rest."""
    answer = real_answer(stack, "P02-pt")
    huge = "opioid use disorder, " * 250_000  # 5.25 MB
    resource_of(answer, "Condition")["code"]["text"] = huge
    digest = hashlib.sha256(huge.encode()).hexdigest()
    launch = launch_with_answer(stack, answer, "P02-pt")
    page = launch.final.text
    assert launch.final.status_code == 200
    assert len(page.encode()) < 100_000, len(page)
    assert f"sha256 {digest}" in page
    assert suggested(page) == P01_KINDS
    assert (
        "Condition/P02-cond1: a text longer than 1000 characters cut for the screen and the log "
        "(marked with the full text's length and SHA-256)." in notices(page)
    )
    assert len(json.dumps(log_events(stack, "suggestions-shown")[-1].data)) < 20_000
    signed = launch_flow.sign_all(launch, stack.app.url)
    assert signed.status_code in (200, 302, 303), signed.text[:300]
    decision = log_events(stack, "decision")[-1]
    logged = json.dumps(decision.data)
    assert len(logged) < 50_000, len(logged)
    assert f"sha256 {digest}" in logged


def test_request_bodies_are_bounded_with_a_clear_page(stack, p01_answer) -> None:
    launch = launch_with_answer(stack, copy.deepcopy(p01_answer))
    context_id = launch.final.url.rsplit("/", 1)[1]
    decisions = len(log_events(stack, "decision"))
    answer = launch.browser.post(
        f"{stack.app.url}/c/{context_id}/sign",
        data={"csrf_token": "x", "program-other": "y" * (2 * 1024 * 1024)},
        timeout=30,
    )
    assert answer.status_code == 413
    assert "Too much data" in answer.text
    assert "larger than Handoff accepts" in answer.text
    assert len(log_events(stack, "decision")) == decisions  # nothing was signed

    def chunks():  # no Content-Length: refused without being read past the limit
        for _ in range(64):
            yield b"program-other=" + b"z" * 65_536 + b"&"

    chunked = launch.browser.post(
        f"{stack.app.url}/c/{context_id}/sign",
        data=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    # Without a Content-Length werkzeug stops reading at MAX_CONTENT_LENGTH (never past it)
    # and parses what it read: here a form without its CSRF token, refused (400).
    assert chunked.status_code in (400, 413)
    assert len(log_events(stack, "decision")) == decisions


@pytest.fixture
def app_config(stack) -> Iterator[dict]:
    """The running app's settings, restored after the test."""
    config = stack.app.app.config
    saved = dict(config)
    yield config
    config.update(saved)


def test_a_chart_with_more_resources_than_the_limit_is_cut_with_a_notice(
    stack, p01_answer, app_config
) -> None:
    app_config["CHART_MAX_RESOURCES"] = 3  # P01: Patient, Encounter, Condition, Observation
    launch = launch_with_answer(stack, copy.deepcopy(p01_answer))
    assert launch.final.status_code == 200
    assert (
        "The chart is larger than Handoff reads (at most 3 resources and 32 MB): not all of "
        "Observation was read. Suggestions may be incomplete." in notices(launch.final.text)
    )
    assert "prc-consult" in suggested(launch.final.text)


def test_a_chart_past_the_byte_limit_stops_reading_with_a_notice(
    stack, p01_answer, app_config
) -> None:
    answer = copy.deepcopy(p01_answer)
    observations = search_of(answer, "Observation")["resource"]
    observations["link"] = [
        {"relation": "next", "url": f"{stack.ehr_url}/fhir/Observation?patient={PATIENT}"}
    ]
    app_config["CHART_MAX_BYTES"] = len(json.dumps(answer)) + 200  # not the next page too
    launch = launch_with_answer(stack, answer)
    assert launch.final.status_code == 200, launch.final.text[:300]
    shown = notices(launch.final.text)
    assert any(
        n.startswith("The chart is larger than Handoff reads")
        and n.endswith("not all of Observation was read. Suggestions may be incomplete.")
        for n in shown
    ), shown


def test_a_first_answer_past_the_byte_limit_is_a_clear_error_page(
    stack, p01_answer, app_config
) -> None:
    app_config["CHART_MAX_BYTES"] = 1000
    launch = launch_with_answer(stack, copy.deepcopy(p01_answer))
    assert launch.final.status_code == 502
    assert "The chart is larger than Handoff reads (more than 1,000 bytes)" in launch.final.text


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param({"resourceType": "OperationOutcome", "issue": ["broken"]}, id="issue-string"),
        pytest.param(
            {"resourceType": "OperationOutcome", "issue": [{"details": "x", "expression": "y"}]},
            id="details-string",
        ),
        pytest.param({"resourceType": "OperationOutcome", "issue": {"code": "x"}}, id="issue-dict"),
        pytest.param(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "diagnostics": "z" * 5_000_000}],
            },
            id="five-megabyte-diagnostics",
        ),
    ],
)
def test_a_malformed_or_huge_error_answer_is_a_bounded_error_page(stack, outcome) -> None:
    """The EHR's own words on an error page come from its OperationOutcome: read safely and
    bounded, so a hostile one is neither a 500 nor a 5 MB page."""
    launch = launch_flow.authorize(launch_flow.start(stack.app.url, stack.ehr_url, PATIENT))
    stack.proxy.add_fault("status", method="POST", path="/fhir", status=500, body=outcome)
    launch_flow.finish(launch)
    assert launch.final.status_code == 502, launch.final.text[:300]
    assert "The chart could not be read" in launch.final.text
    assert len(launch.final.content) < 20_000
