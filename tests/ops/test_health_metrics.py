"""Operations over real HTTP (issue 15 item 5): /healthz, /readyz (and what it names when the
rules on disk are broken), Prometheus metrics counting a launch and a Sign, request ids in
and out, and JSON log lines that carry the request id and no PHI or token."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from smartapp.engine import location
from smartapp.web.logs import JsonFormatter
from tests import launch_flow
from tests.stacks import Stack, start_stack

PATIENT = "P01-pt"


@pytest.fixture(scope="module")
def rules_copy(tmp_path_factory) -> Path:
    """A private copy of the shipped rules, so a test may break it."""
    target = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(location.rules_dir(), target)
    return target


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_dir, rules_copy) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("ops"), shared_dir, RULES_DIR=str(rules_copy), LOG_FORMAT="json"
    )
    yield running
    running.stop()


def app_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.app_port}"


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from the text exposition (0 when absent)."""
    wanted = "".join(sorted(f'{k}="{v}"' for k, v in labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        have = "".join(sorted(re.findall(r'[a-z_]+="[^"]*"', match.group(2) or "")))
        if have == wanted:
            return float(match.group(3))
    return 0.0


def test_healthz_answers_without_the_database(stack: Stack) -> None:
    answer = requests.get(f"{app_url(stack)}/healthz", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}
    assert "Set-Cookie" not in answer.headers


def test_readyz_passes_every_check(stack: Stack) -> None:
    answer = requests.get(f"{app_url(stack)}/readyz", timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["failed"] == []
    assert [c["name"] for c in body["checks"]] == [
        "database",
        "migrations",
        "registrations",
        "rules",
    ]
    assert all(c["ok"] for c in body["checks"])


def test_readyz_names_broken_rules_then_recovers(stack: Stack, rules_copy: Path) -> None:
    pack = rules_copy / "packs" / "default.yaml"
    kept = pack.read_text()
    pack.write_text(kept + "\n  this: is: not yaml: [\n")
    try:
        answer = requests.get(f"{app_url(stack)}/readyz", timeout=10)
        assert answer.status_code == 503
        body = answer.json()
        assert body["failed"] == ["rules"]
        rules = next(c for c in body["checks"] if c["name"] == "rules")
        assert "do not load" in rules["detail"]
    finally:
        pack.write_text(kept)
    assert requests.get(f"{app_url(stack)}/readyz", timeout=10).status_code == 200


def test_readyz_names_a_schema_behind_the_code(stack: Stack) -> None:
    database = stack.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        connection.execute("UPDATE alembic_version SET version_num = 'an-older-one'")
    try:
        answer = requests.get(f"{app_url(stack)}/readyz", timeout=10)
        assert answer.status_code == 503
        assert answer.json()["failed"] == ["migrations"]
    finally:
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_request_id_taken_from_the_caller_or_made(stack: Stack) -> None:
    sent = requests.get(
        f"{app_url(stack)}/healthz", headers={"X-Request-Id": "edge-1234abcd"}, timeout=10
    )
    assert sent.headers["X-Request-Id"] == "edge-1234abcd"
    made = requests.get(f"{app_url(stack)}/healthz", timeout=10).headers["X-Request-Id"]
    bad = requests.get(
        f"{app_url(stack)}/healthz", headers={"X-Request-Id": 'x" injected'}, timeout=10
    ).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made) and re.fullmatch(r"[0-9a-f]{32}", bad)
    assert made != bad


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line of the test, as the JSON formatter writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def secrets_of_the_visit(stack: Stack, launch: launch_flow.Launch) -> set[str]:
    """What must never be logged: the patient's id and names, the tokens the EHR issued, the
    launch value and authorization code."""
    folder = Path(stack.database_url.removeprefix("sqlite:///")).parent
    with sqlite3.connect(folder / "sandbox.sqlite") as connection:
        tokens = {row[0] for row in connection.execute("SELECT access_token FROM oauth_token")}
        tokens |= {
            row[0] for row in connection.execute("SELECT refresh_token FROM oauth_token") if row[0]
        }
    patient = stack.reader(PATIENT).get(f"Patient/{PATIENT}")
    names = {n.get("family", "") for n in patient.get("name", [])}
    names |= {g for n in patient.get("name", []) for g in n.get("given", [])}
    code = launch.callback_url.split("code=")[1].split("&")[0]
    assert tokens and names and code and launch.launch_value
    return {PATIENT, launch.launch_value or "", code, *tokens, *names} - {""}


def test_launch_and_sign_counted_logged_by_request_without_phi(
    stack: Stack, json_log: io.StringIO
) -> None:
    app = app_url(stack)
    before = requests.get(f"{app}/metrics", timeout=10).text
    launch = launch_flow.full(app, stack.ehr_url, PATIENT)
    assert launch.final.status_code == 200
    launch.browser.headers["X-Request-Id"] = "sign-request-0001"
    signed = launch_flow.sign_all(launch, app)
    assert signed.status_code == 200
    after = requests.get(f"{app}/metrics", timeout=10)
    assert after.headers["Content-Type"].startswith("text/plain")
    text = after.text

    assert metric(text, "handoff_launches_total") == metric(before, "handoff_launches_total") + 1
    shown = re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', launch.final.text)
    assert shown
    for kind in set(shown):
        grew = metric(text, "handoff_suggestions_shown_total", kind=kind) - metric(
            before, "handoff_suggestions_shown_total", kind=kind
        )
        assert grew == shown.count(kind)
        accepted = metric(text, "handoff_suggestions_accepted_total", kind=kind) - metric(
            before, "handoff_suggestions_accepted_total", kind=kind
        )
        assert accepted == shown.count(kind)
    ehr = stack.ehr_url.removeprefix("http://")
    assert metric(text, "handoff_write_attempts_total", ehr=ehr, outcome="written") >= 1
    assert metric(text, "handoff_outbox_depth") == 0
    assert "handoff_outbox_oldest_age_seconds" in text
    # The chart read (a batch) and the writes (a transaction), timed.
    fhir_posts = metric(
        text, "handoff_fhir_request_seconds_count", ehr=ehr, method="POST", status="2xx"
    ) - metric(before, "handoff_fhir_request_seconds_count", ehr=ehr, method="POST", status="2xx")
    assert fhir_posts >= 2
    assert metric(
        text, "handoff_http_request_seconds_count", route="/launch", method="GET", status="3xx"
    )

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    # Handoff's lines: those logged while it served a request (any logger: its HTTP client's
    # too), and its own loggers' (the delivery thread's). The test's browser and the EHR
    # (in this process too) log the patient's chart paths: theirs are left aside.
    handoff_lines = [
        line
        for line in lines
        if "request_id" in line
        or (line["logger"].startswith(("handoff", "smartapp")) and "sandbox" not in line["logger"])
    ]
    assert any(line["logger"] == "handoff.launch" for line in handoff_lines)
    with_ids = {line["request_id"] for line in handoff_lines if "request_id" in line}
    assert len(with_ids) >= 2  # the callback and the screen (each its own id) at least
    assert all("request_id" in line for line in handoff_lines if line["logger"] == "handoff.launch")
    # The write Sign started goes on in a thread of its own: its lines keep Sign's request id.
    attempts = [line for line in handoff_lines if line["message"].startswith("write attempt:")]
    assert attempts and attempts[0]["request_id"] == "sign-request-0001"
    handoff_text = "\n".join(json.dumps(line) for line in handoff_lines)
    for secret in secrets_of_the_visit(stack, launch):
        assert secret not in handoff_text, f"logged: {secret[:12]}…"


def test_metrics_behind_a_token_when_set(stack: Stack) -> None:
    app = stack.app.app
    app.config["METRICS_TOKEN"] = "scrape-secret"
    try:
        refused = requests.get(f"{app_url(stack)}/metrics", timeout=10)
        allowed = requests.get(
            f"{app_url(stack)}/metrics",
            headers={"Authorization": "Bearer scrape-secret"},
            timeout=10,
        )
    finally:
        app.config["METRICS_TOKEN"] = None
    assert refused.status_code == 401
    assert allowed.status_code == 200 and "handoff_launches_total" in allowed.text


def test_calls_to_an_ehr_reuse_kept_alive_connections(stack: Stack) -> None:
    """Two launches: the EHR's connections are opened once per process and reused (one
    shared pool per EHR), not opened anew for each FHIR or token call."""
    from smartapp.fhir import http

    app = app_url(stack)
    manager = http.session_for(stack.ehr_url).get_adapter(stack.ehr_url).poolmanager

    def count(attribute: str) -> int:
        return sum(getattr(manager.pools[key], attribute) for key in manager.pools.keys())  # noqa: SIM118 (no iteration)

    launch_flow.full(app, stack.ehr_url, "P05-pt")
    opened, served = count("num_connections"), count("num_requests")
    launch_flow.full(app, stack.ehr_url, "P12-pt")
    # the token and the chart read (discovery and the JWKS are kept from the first launch)
    assert count("num_requests") >= served + 2
    assert count("num_connections") <= opened + 1
