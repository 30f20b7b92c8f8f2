"""Writes after the physician's launch: Handoff's SMART Backend Services token, per EHR
registration (launch/backend.py, sessions.client_for_referral), over real HTTP.

The sandbox registers Handoff's backend client (its JWKS by URL: Handoff's own
/.well-known/jwks.json; or by value); Handoff signs its client assertions with its keys
(ES384 or RS384). A write queued while the launch was live lands through the backend token
once the launch token has expired and its refresh is refused; a coach's Task update too.
Without backend access the write waits, and the queue says for what; nothing is lost.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pytest
import requests
import yaml
from click.testing import CliRunner

from smartapp.cli import cli
from smartapp.launch import backend
from smartapp.launch.keys import KeyStore
from smartapp.launch.registrations import Registration
from smartapp.writeback import outbox
from smartapp.writeback.task_update import TaskChanges
from smartapp.writeback.worker import OutboxWorker, deliver_now
from tests import launch_flow
from tests.backend_stack import (
    BACKEND_CLIENT,
    BACKEND_SCOPES,
    end_the_launch,
    sandbox_tokens,
    start_backend_stack,
)
from tests.launch_flow import Controls, sign_all
from tests.stacks import referral_of

WAITING = (
    "Waiting for the next launch of this visit: Handoff sandbox EHR gives Handoff no backend "
    "access."
)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(outbox, "BACKOFF_BASE_SECONDS", 0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir):
    """Handoff with backend access (ES384 key, JWKS by URL), a fault proxy before the EHR."""
    running, kid = start_backend_stack(tmp_path_factory.mktemp("backend"), shared_dir, proxy=True)
    running.kid = kid
    yield running
    running.stop()
    backend.TOKENS.forget()


@pytest.fixture(scope="module")
def plain(tmp_path_factory, shared_dir):
    """Handoff without backend access at the EHR (no `backend:` in its registration)."""
    running, _ = start_backend_stack(
        tmp_path_factory.mktemp("no-backend"), shared_dir, backend=False, proxy=True
    )
    yield running
    running.stop()


def registration_of(stack, **backend_block) -> Registration:
    data = yaml.safe_load((stack.launch_dir / "sandbox.yaml").read_text())
    if backend_block:
        data["backend"] = backend_block
    return Registration.model_validate(data)


def queue_with_a_503(stack, patient: str):
    """Open the screen and Sign while the EHR answers 503 once: the referral is queued."""
    launch = launch_flow.full(stack.app.url, stack.ehr_url, patient)
    assert launch.final.status_code == 200, launch.final.text[:300]
    stack.proxy.add_fault(method="POST", path="/fhir", times=1, kind="status", status=503)
    signed = sign_all(launch, stack.app.url)
    assert "queued for the chart" in signed.text
    assert referral_of(stack.database_url, patient).status == "queued"
    stack.proxy.wait_idle(10)
    return launch


def deliver(stack, patient: str, seconds: float = 20.0):
    worker = OutboxWorker(stack.app.app)
    deadline = time.monotonic() + seconds
    referral = referral_of(stack.database_url, patient)
    while time.monotonic() < deadline:
        worker.run_once()
        referral = referral_of(stack.database_url, patient)
        if referral.status != "queued":
            return referral
        time.sleep(0.3)
    return referral


@pytest.mark.parametrize(("alg", "jwks_by"), [("RS384", "value"), ("ES384", "url")])
def test_backend_token_for_each_algorithm_and_jwks(stack, tmp_path, alg, jwks_by):
    """RS384 with the key set registered by value; ES384 with Handoff's JWKS URL."""
    client_id = f"backend-{alg.lower()}-{jwks_by}"
    keys = KeyStore(tmp_path / "keys")
    kid = keys.generate(alg)
    by = (
        {"jwks": keys.public_jwks()}
        if jwks_by == "value"
        else {"jwks_uri": f"{stack.app.url}/.well-known/jwks.json"}
    )
    if jwks_by == "url":  # the running app's own keys: its published JWKS
        keys, kid = KeyStore(stack.launch_dir.parent / "app" / "keys"), stack.kid
    registered = requests.post(
        f"{stack.ehr.url}/_sandbox/clients",
        json={
            "client_id": client_id,
            "auth_method": "private_key_jwt",
            "backend_scopes": ["system/Task.rs"],
        }
        | by,
        timeout=10,
    )
    assert registered.status_code == 200, registered.text
    registration = registration_of(
        stack, client_id=client_id, key_id=kid, scopes=["system/Task.rs"]
    )
    fhir = backend.client(registration, keys, (5.0, 10.0), force_refresh=True)
    assert fhir.base == f"{stack.ehr_url}/fhir"
    assert isinstance(fhir.find("Task", "status=requested"), list)
    issued = [t for t in sandbox_tokens(stack) if t[0] == client_id]
    assert issued and issued[-1][1] == "system/Task.rs"


def test_token_is_cached_then_renewed_before_it_expires(stack):
    registration = registration_of(
        stack, client_id=BACKEND_CLIENT, key_id=stack.kid, scopes=["system/Task.rs"]
    )
    keys = KeyStore(stack.launch_dir.parent / "app" / "keys")
    lifetime = f"{stack.ehr.url}/_sandbox/backend-token-lifetime"

    def issued() -> int:
        return sum(1 for t in sandbox_tokens(stack) if t[1] == "system/Task.rs")

    requests.post(lifetime, json={"seconds": 3}, timeout=5).raise_for_status()
    try:
        backend.TOKENS.forget(registration.iss)
        before = issued()
        first = backend.TOKENS.access_token(registration, keys, (5.0, 10.0))
        again = backend.TOKENS.access_token(registration, keys, (5.0, 10.0))
        assert first == again and issued() == before + 1  # cached
        time.sleep(2.8)  # inside the renewal margin (10% of 3 s) or past it
        renewed = backend.TOKENS.access_token(registration, keys, (5.0, 10.0))
        assert renewed != first and issued() == before + 2
        forced = backend.TOKENS.access_token(registration, keys, (5.0, 10.0), force=True)
        assert forced != renewed and issued() == before + 3
    finally:
        requests.post(lifetime, json={"seconds": 300}, timeout=5)


def handoff_cli(stack, *args: str):
    """`handoff --instance-path <the app's> ARGS` beside the running app."""
    return CliRunner().invoke(
        cli,
        ["--instance-path", str(stack.launch_dir.parent / "app"), *args],
        env={"DATABASE_URL": stack.database_url, "HANDOFF_LAUNCH_DIR": str(stack.launch_dir)},
    )


def test_backend_check_says_what_the_ehr_granted(stack, plain):
    granted = handoff_cli(stack, "backend", "check")
    assert granted.exit_code == 0, granted.output
    assert f"sandbox: {BACKEND_CLIENT} at {stack.ehr_url}/auth/token" in granted.output
    assert f"granted {' '.join(BACKEND_SCOPES)}; expires in 300 s" in granted.output
    none = handoff_cli(plain, "backend", "check")
    assert none.exit_code == 0 and "sandbox: no backend access" in none.output
    asked = handoff_cli(plain, "backend", "check", "sandbox")
    assert asked.exit_code == 1 and "no backend: block" in asked.output
    tokens = [t[2] for t in sandbox_tokens(stack)]
    assert not any(token in granted.output for token in tokens)  # never shown


def test_queued_write_and_coach_update_land_through_the_backend_token(stack, caplog):
    caplog.set_level(logging.DEBUG)
    patient = "P01-pt"
    queue_with_a_503(stack, patient)
    end_the_launch(stack)
    try:
        done = deliver(stack, patient)
        assert done.status == "written", done.last_error
        fhir = stack.reader(patient)
        for type_ in ("ServiceRequest", "DocumentReference", "Task"):
            assert len(fhir.search(f"{type_}?patient={patient}")) == 1, type_
        backend_tokens = [t for t in sandbox_tokens(stack) if t[0] == BACKEND_CLIENT]
        assert backend_tokens and backend_tokens[-1][1] == " ".join(BACKEND_SCOPES)
        # A coach accepts the handoff later: the Task update goes the same way.
        services = stack.app.app.extensions["handoff"]
        with services.db.session() as session:
            queued = outbox.enqueue_task_update(
                session,
                done.id,
                TaskChanges(status="accepted", modified_at=datetime.now(UTC)),
            )
        assert queued
        updated = deliver(stack, patient)
        assert updated.status == "written", updated.last_error
        (task,) = fhir.search(f"Task?patient={patient}")
        assert task["status"] == "accepted"
    finally:
        Controls(stack.ehr_url).faults()
    secrets = [t[2] for t in sandbox_tokens(stack)]
    leaked = [s for s in secrets if s in caplog.text]
    assert not leaked, "an access token was logged"
    assert "backend token issued" in caplog.text  # the log names the event, never the token


def test_without_backend_access_the_queue_says_what_it_waits_for(plain, caplog):
    patient = "P02-pt"
    queue_with_a_503(plain, patient)
    end_the_launch(plain)
    try:
        waiting = deliver(plain, patient, seconds=3)
        assert waiting.status == "queued"
        assert waiting.last_error == WAITING
        assert plain.reader(patient).search(f"ServiceRequest?patient={patient}") == []
        assert all(t[0] != BACKEND_CLIENT for t in sandbox_tokens(plain))
        listing = handoff_cli(plain, "outbox", "list")
        assert listing.exit_code == 0, listing.output
        assert WAITING in listing.output
    finally:
        Controls(plain.ehr_url).faults()
    # The next launch of the visit: the write resumes with its credentials, nothing lost.
    relaunch = launch_flow.full(plain.app.url, plain.ehr_url, patient)
    assert relaunch.final.status_code == 200
    services = plain.app.app.extensions["handoff"]
    assert waiting.id in outbox.due(services.db)  # woken by the launch, not a minute later
    with plain.app.app.app_context():
        deliver_now(services, waiting.id, plain.app.app.config)
    done = referral_of(plain.database_url, patient)
    assert done.status == "written", done.last_error
    for type_ in ("ServiceRequest", "DocumentReference", "Task"):
        assert len(plain.reader(patient).search(f"{type_}?patient={patient}")) == 1, type_


def test_a_refused_backend_grant_is_said_in_the_queue(stack):
    patient = "P03-pt"
    queue_with_a_503(stack, patient)
    controls = f"{stack.ehr.url}/_sandbox"
    requests.post(f"{controls}/clients/{BACKEND_CLIENT}/revoke", timeout=5).raise_for_status()
    end_the_launch(stack)
    try:
        waiting = deliver(stack, patient, seconds=3)
        assert waiting.status == "queued"
        assert waiting.last_error.startswith(
            "Waiting for Handoff sandbox EHR: it refused Handoff's backend access (invalid_client"
        )
        assert f"The client {BACKEND_CLIENT} is revoked" in waiting.last_error
        assert stack.reader(patient).search(f"ServiceRequest?patient={patient}") == []
    finally:
        Controls(stack.ehr_url).faults()
        requests.post(  # registered again: not revoked any more
            f"{controls}/clients",
            json={
                "client_id": BACKEND_CLIENT,
                "auth_method": "private_key_jwt",
                "jwks_uri": f"{stack.app.url}/.well-known/jwks.json",
                "backend_scopes": BACKEND_SCOPES,
            },
            timeout=5,
        ).raise_for_status()
    with stack.app.app.app_context():  # the worker would try again within its minute
        deliver_now(stack.app.app.extensions["handoff"], waiting.id, stack.app.app.config)
    done = referral_of(stack.database_url, patient)
    assert done.status == "written", done.last_error


def test_a_backend_block_is_checked_on_load(tmp_path):
    """A mistake in the block names the file and the field (no EHR needed)."""
    from smartapp.cli import demo_registration
    from smartapp.launch.registrations import RegistrationError, load_registration

    path = tmp_path / "ehr.yaml"
    for block, field in (
        ({"client_id": "x", "key_id": "k", "scopes": ["patient/Task.rs"]}, "backend.scopes"),
        ({"client_id": "x", "key_id": "k", "scopes": []}, "backend.scopes"),
        ({"client_id": "x", "scopes": ["system/Task.rs"]}, "backend.key_id"),
        ({"client_id": "x", "key_id": "k", "scopes": ["system/Task.rs"], "alg": "HS256"}, "alg"),
    ):
        path.write_text(yaml.safe_dump(demo_registration("http://ehr.test", backend=block)))
        with pytest.raises(RegistrationError, match=field):
            load_registration(path)
    good = {"client_id": "x", "key_id": "k", "scopes": ["system/Task.rus", "system/*.read"]}
    path.write_text(yaml.safe_dump(demo_registration("http://ehr.test", backend=good)))
    loaded = load_registration(path).backend
    assert loaded is not None and loaded.signing_alg is None  # the key's own algorithm
