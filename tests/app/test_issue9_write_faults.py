"""Issue 9, items 23, 24 and 25: a connection cut after the EHR committed, a 2xx answer with an
unreadable body, and (Epic profile) a write delivered after the client's timeout each land the
referral exactly once (every resource counted by Handoff's identifier or _tag at the EHR), and
the physician sees "queued" or "written", never "refused" or an error page. The faults come from
the real fault proxy in front of the sandbox, with the sandbox's Epic write behaviour."""

from __future__ import annotations

import time

import pytest
import requests

from smartapp.db import Referral
from smartapp.writeback import outbox
from smartapp.writeback.worker import OutboxWorker
from tests import launch_flow
from tests.launch_flow import sign_all
from tests.stacks import referral_of, start_stack

READ_TIMEOUT = 2.0
LATE = READ_TIMEOUT + 3  # a write that reaches the EHR after Handoff gave up and retried


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(outbox, "BACKOFF_BASE_SECONDS", 0.2)


def deliver_until_settled(stack, patient_id: str, seconds: float = 30.0) -> Referral:
    worker = OutboxWorker(stack.app.app)
    deadline = time.monotonic() + seconds
    referral = referral_of(stack.database_url, patient_id)
    while time.monotonic() < deadline and referral.status == "queued":
        worker.run_once()
        referral = referral_of(stack.database_url, patient_id)
        time.sleep(0.2)
    return referral


def count_by_identifier(stack, patient_id: str) -> dict[str, int]:
    """How many of each planned resource the EHR holds, found by Handoff's identifier (or,
    for the Provenance, its _tag): each must be exactly 1 where it was sent. Each one found
    must also be the one Handoff recorded (its server id)."""
    fhir = stack.reader(patient_id)
    referral = referral_of(stack.database_url, patient_id)
    counts = {}
    for op in referral.plan["operations"]:
        if op["mode"] != "rest" or op.get("method", "POST") != "POST":
            continue
        found = fhir.search(f"{op['type']}?{op['conditional']}")
        counts[f"{op['type']}:{op['key'][:8]}"] = len(found)
        if op["status"] == "written":
            assert [r["id"] for r in found] == [op["id"]], (op["type"], op["id"])
    return counts


def assert_outcome_not_refused(page: requests.Response) -> None:
    assert page.status_code == 200, page.text[:300]
    assert "the EHR refused the write" not in page.text
    assert "Nothing was written" not in page.text
    assert "queued for the chart" in page.text or "Written to the chart" in page.text


# -- items 23, 24: faults after the EHR committed, fhir-rest (one transaction) -------------


@pytest.fixture(scope="module")
def rest_stack(tmp_path_factory, shared_dir):
    stack = start_stack(
        tmp_path_factory.mktemp("issue9-rest"),
        shared_dir,
        proxy=True,
        FHIR_READ_TIMEOUT=READ_TIMEOUT,
    )
    yield stack
    stack.stop()


REST_FAULTS = [
    ("P14-pt", "cut_body"),  # item 23: ChunkedEncodingError after the commit
    ("P15-pt", "garble"),  # item 24: a 2xx answer whose body cannot be read
]


@pytest.mark.parametrize(("patient", "kind"), REST_FAULTS, ids=[k for _, k in REST_FAULTS])
def test_fault_after_commit_lands_once_fhir_rest(rest_stack, patient, kind):
    stack = rest_stack
    launch = launch_flow.full(stack.app.url, stack.ehr_url, patient)
    assert launch.final.status_code == 200
    stack.proxy.add_fault(method="POST", path="/fhir", kind=kind, times=1)
    signed = sign_all(launch, stack.app.url)
    assert_outcome_not_refused(signed)
    assert stack.proxy.stats[kind] == 1
    first = referral_of(stack.database_url, patient)
    assert first.status in ("queued", "written"), first.last_error
    done = deliver_until_settled(stack, patient)
    assert done.status == "written", done.last_error
    counts = count_by_identifier(stack, patient)
    assert set(counts) and all(n == 1 for n in counts.values()), counts
    page = launch.browser.get(launch.final.url, timeout=10)
    assert "Written to the chart" in page.text


# -- items 24, 25: the Epic profile (one by one, no conditional create) ---------------------


@pytest.fixture(scope="module")
def epic_stack(tmp_path_factory, shared_dir):
    stack = start_stack(
        tmp_path_factory.mktemp("issue9-epic"),
        shared_dir,
        behaviour="epic",
        profile="epic",
        proxy=True,
        FHIR_READ_TIMEOUT=READ_TIMEOUT,
        OUTBOX_CONFIRM_WAIT_SECONDS=LATE + 4,
    )
    yield stack
    stack.stop()


EPIC_FAULTS = [
    # item 24: the first draft order's 201 arrives unreadable; the note must still arrive.
    ("P01-pt", {"kind": "garble", "path": "/fhir/MedicationRequest"}),
    ("P12-pt", {"kind": "garble", "path": "/fhir/DocumentReference"}),
    # item 25: the draft order lands at the EHR after Handoff gave up waiting.
    ("P05-pt", {"kind": "delay", "seconds": LATE, "path": "/fhir/MedicationRequest"}),
    (
        "P07-pt",
        {
            "kind": "delay",
            "seconds": LATE,
            "stage": "request",
            "path": "/fhir/MedicationRequest",
        },
    ),
    ("P14-pt", {"kind": "cut_body", "path": "/fhir/MedicationRequest"}),
    # item 24: a 201 that says nothing (no body, no Location): which note was created?
    (
        "P02-pt",
        {
            "kind": "garble",
            "path": "/fhir/DocumentReference",
            "body": b"",
            "headers": {"Location": ""},
        },
    ),
]


@pytest.mark.parametrize(
    ("patient", "fault"),
    EPIC_FAULTS,
    ids=["garble-order", "garble-note", "late-order", "late-request", "cut-order", "silent-note"],
)
def test_fault_after_commit_lands_once_epic(epic_stack, patient, fault):
    stack = epic_stack
    launch = launch_flow.full(stack.app.url, stack.ehr_url, patient)
    assert launch.final.status_code == 200
    stack.proxy.add_fault(method="POST", times=1, **fault)
    signed = sign_all(launch, stack.app.url)
    assert_outcome_not_refused(signed)
    assert stack.proxy.stats[fault["kind"]] >= 1
    done = deliver_until_settled(stack, patient)  # at once, as the worker would
    assert done.status == "written", done.last_error
    assert stack.proxy.wait_idle(15)  # a late write has reached the EHR by now
    counts = count_by_identifier(stack, patient)
    types = {key.split(":")[0] for key in counts}
    assert "DocumentReference" in types and "MedicationRequest" in types, counts
    assert all(n == 1 for n in counts.values()), counts
    fhir = stack.reader(patient)
    assert len(fhir.search(f"DocumentReference?patient={patient}")) == 1
    drafts = fhir.search(f"MedicationRequest?patient={patient}&status=draft")
    assert len(drafts) == sum(1 for key in counts if key.startswith("MedicationRequest"))
    page = launch.browser.get(launch.final.url, timeout=10)
    assert "Written to the chart" in page.text


def test_unanswered_create_that_never_landed_is_written_after_the_confirm_wait(epic_stack):
    """Item 25's other side: the draft order got no answer and never reached the EHR. The
    retries search for it, send no second create while it might still land, and after
    OUTBOX_CONFIRM_WAIT_SECONDS create it: once."""
    stack = epic_stack
    wait = stack.app.app.config["OUTBOX_CONFIRM_WAIT_SECONDS"]
    launch = launch_flow.full(stack.app.url, stack.ehr_url, "P15-pt")
    stack.proxy.add_fault(
        kind="blackhole", method="POST", path="/fhir/MedicationRequest", seconds=LATE
    )
    started = time.monotonic()
    assert_outcome_not_refused(sign_all(launch, stack.app.url))
    assert stack.proxy.stats["blackhole"] == 1
    first = referral_of(stack.database_url, "P15-pt")
    assert first.status == "queued" and "did not answer in time" in first.last_error
    done = deliver_until_settled(stack, "P15-pt")
    assert done.status == "written", done.last_error
    assert time.monotonic() - started >= wait  # no second create before the wait
    assert done.attempts > 2  # searched (and waited) in between
    counts = count_by_identifier(stack, "P15-pt")
    assert any(key.startswith("MedicationRequest") for key in counts), counts
    assert all(n == 1 for n in counts.values()), counts
