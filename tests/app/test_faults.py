"""Every signed referral lands exactly once, whatever the EHR does: faults injected by a real
proxy in front of the sandbox, and the app killed and restarted between attempts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from smartapp.db import Referral
from smartapp.writeback import outbox
from smartapp.writeback.worker import OutboxWorker
from tests import launch_flow
from tests.launch_flow import sign_all
from tests.stacks import referral_of, start_stack, started

READ_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    stack = start_stack(
        tmp_path_factory.mktemp("faults"), shared_dir, proxy=True, FHIR_READ_TIMEOUT=READ_TIMEOUT
    )
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(outbox, "BACKOFF_BASE_SECONDS", 0.2)


def open_screen(stack, patient_id: str, app_url: str | None = None):
    launch = launch_flow.full(app_url or stack.app.url, stack.ehr_url, patient_id)
    assert launch.final.status_code == 200, launch.final.text[:300]
    return launch


def deliver_until_written(stack, patient_id: str, seconds: float = 30.0) -> Referral:
    worker = OutboxWorker(stack.app.app)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        worker.run_once()
        referral = referral_of(stack.database_url, patient_id)
        if referral.status != "queued":
            return referral
        time.sleep(0.2)
    return referral


def assert_landed_once(
    stack, patient_id: str, types=("ServiceRequest", "DocumentReference", "Task")
) -> None:
    fhir = stack.reader(patient_id)
    for type_ in types:
        found = fhir.search(f"{type_}?patient={patient_id}")
        assert len(found) == 1, (type_, len(found))
    referral = referral_of(stack.database_url, patient_id)
    provenance = next(op for op in referral.plan["operations"] if op["type"] == "Provenance")
    assert len(fhir.search(f"Provenance?{provenance['conditional']}")) == 1


FAULTS = [
    ("P01-pt", {"kind": "status", "status": 503}, "HTTP 503"),
    ("P02-pt", {"kind": "status", "status": 429, "retry_after": 1}, "HTTP 429"),
    ("P03-pt", {"kind": "delay", "seconds": READ_TIMEOUT + 2}, "did not answer in time"),
    ("P04-pt", {"kind": "reset"}, "could not be reached"),
    ("P05-pt", {"kind": "drop_after_forward"}, "could not be reached"),
]


@pytest.mark.parametrize(
    ("patient", "fault", "first_error"),
    FAULTS,
    ids=[f["kind"] + str(f.get("status", "")) for _, f, _ in FAULTS],
)
def test_transient_fault_then_landed_exactly_once(stack, patient, fault, first_error):
    launch = open_screen(stack, patient)
    stack.proxy.add_fault(method="POST", path="/fhir", times=1, **fault)
    signed = sign_all(launch, stack.app.url)
    assert signed.status_code == 200
    assert "queued for the chart" in signed.text  # the physician sees it is queued
    first = referral_of(stack.database_url, patient)
    assert first.status == "queued" and first_error in first.last_error
    if fault["kind"] == "status" and fault.get("retry_after"):
        wait = (
            first.next_attempt_at.replace(tzinfo=None) - first.updated_at.replace(tzinfo=None)
        ).total_seconds()
        assert 0.9 <= wait <= 1.1  # Retry-After honoured
    stack.proxy.wait_idle(10)
    done = deliver_until_written(stack, patient)
    assert done.status == "written", done.last_error
    assert done.attempts == 2
    assert_landed_once(stack, patient)
    page = launch.browser.get(launch.final.url, timeout=10)
    assert "Written to the chart" in page.text


def test_connection_refused_for_a_while(stack):
    launch = open_screen(stack, "P07-pt")
    stack.proxy.add_fault(kind="refuse", seconds=2)
    signed = sign_all(launch, stack.app.url)
    assert "queued for the chart" in signed.text
    assert "could not be reached" in referral_of(stack.database_url, "P07-pt").last_error
    time.sleep(2.2)
    done = deliver_until_written(stack, "P07-pt")
    assert done.status == "written"
    assert_landed_once(stack, "P07-pt", types=("ServiceRequest", "DocumentReference"))


def test_permanent_refusal_is_shown_with_the_ehrs_message_and_kept(stack):
    launch = open_screen(stack, "P11-pt")
    requests.post(
        f"{stack.ehr.url}/_sandbox/faults", json={"refuse_create": ["ServiceRequest"]}, timeout=5
    ).raise_for_status()
    try:
        signed = sign_all(launch, stack.app.url)
    finally:
        requests.post(f"{stack.ehr.url}/_sandbox/faults", json={}, timeout=5)
    assert "the EHR refused the write" in signed.text
    assert "ServiceRequest create is not supported" in signed.text
    referral = referral_of(stack.database_url, "P11-pt")
    assert referral.status == "failed"
    OutboxWorker(stack.app.app).run_once()  # a refused write is not retried blindly
    assert referral_of(stack.database_url, "P11-pt").attempts == 1
    assert stack.reader("P11-pt").search("ServiceRequest?patient=P11-pt") == []


def serve(stack, worker: bool) -> subprocess.Popen:
    env = os.environ | {
        "HANDOFF_PUBLIC_URL": f"http://127.0.0.1:{stack.app_port}",
        "HANDOFF_LAUNCH_DIR": str(stack.launch_dir),
        "DATABASE_URL": stack.database_url,
        "HANDOFF_SECRET_KEY": stack.app.app.config["SECRET_KEY"],
        "HANDOFF_TOKEN_KEY": stack.app.app.config["TOKEN_KEY"],
        "HANDOFF_FHIR_READ_TIMEOUT": str(READ_TIMEOUT),
    }
    args = [sys.executable, "-m", "smartapp.cli", "serve", "--port", str(stack.app_port)]
    process = subprocess.Popen(
        args + ([] if worker else ["--no-worker"]),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return started(process, f"http://127.0.0.1:{stack.app_port}/")


def test_app_killed_and_restarted_between_attempts(stack):
    stack.app.stop()  # the app now runs as real processes on the same port and database
    app_url = f"http://127.0.0.1:{stack.app_port}"
    first = serve(stack, worker=False)
    try:
        launch = open_screen(stack, "P13-pt", app_url)
        # The EHR commits the write but the answer is lost; then the app dies.
        stack.proxy.add_fault(method="POST", path="/fhir", kind="drop_after_forward", times=1)
        signed = sign_all(launch, app_url)
        assert "queued for the chart" in signed.text
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert referral_of(stack.database_url, "P13-pt").status == "queued"
    second = serve(stack, worker=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if referral_of(stack.database_url, "P13-pt").status != "queued":
                break
            time.sleep(0.3)
    finally:
        second.terminate()
        second.wait(10)
    referral = referral_of(stack.database_url, "P13-pt")
    assert referral.status == "written", referral.last_error
    assert_landed_once(stack, "P13-pt", types=("ServiceRequest", "DocumentReference", "Task"))
