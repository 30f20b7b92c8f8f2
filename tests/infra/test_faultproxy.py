"""The fault-injecting proxy against a real sandbox: each fault kind has the effect claimed."""

from __future__ import annotations

import concurrent.futures
import errno
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.faultproxy import FaultProxy
from tests.sandbox.conftest import RunningSandbox, start_sandbox

SYSTEM = "urn:handoff:test:faultproxy"
FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    running = start_sandbox(tmp_path_factory.mktemp("faultproxy"), test_controls=True)
    yield running
    running.handle.stop()


@pytest.fixture(scope="module")
def token(ehr: RunningSandbox) -> str:
    return ehr.token("P01-pt", "launch openid fhirUser user/*.cruds")["access_token"]


@pytest.fixture
def proxy(ehr: RunningSandbox) -> Iterator[FaultProxy]:
    with FaultProxy(ehr.base, timeout=10, upstream_timeout=10) as running:
        yield running


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}


def service_request(value: str) -> dict:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": SYSTEM, "value": value}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/P01-pt"},
    }


def post(base: str, token: str, value: str, timeout: float = 10, **extra: str):
    return requests.post(
        f"{base}/fhir/ServiceRequest",
        json=service_request(value),
        headers=headers(token) | extra,
        timeout=timeout,
    )


def landed(ehr: RunningSandbox, token: str, value: str) -> int:
    """How many ServiceRequests carry this identifier, asked of the sandbox directly."""
    found = requests.get(
        f"{ehr.fhir}/ServiceRequest",
        params={"identifier": f"{SYSTEM}|{value}"},
        headers=headers(token),
        timeout=10,
    )
    assert found.status_code == 200, found.text
    return found.json()["total"]


def posts_seen_by_sandbox(ehr: RunningSandbox) -> int:
    log = requests.get(f"{ehr.base}/_sandbox/requests", timeout=10).json()
    return sum(1 for e in log if e["method"] == "POST" and e["path"] == "/fhir/ServiceRequest")


def test_passes_requests_through(ehr: RunningSandbox, token: str, proxy: FaultProxy) -> None:
    direct = requests.get(f"{ehr.fhir}/Patient/P01-pt", headers=headers(token), timeout=10)
    via = requests.get(f"{proxy.url}/fhir/Patient/P01-pt", headers=headers(token), timeout=10)
    assert via.status_code == 200 and via.json() == direct.json()
    assert via.headers["Connection"] == "close"
    assert via.headers["ETag"] == direct.headers["ETag"]
    search = requests.get(
        f"{proxy.url}/fhir/Condition",
        params={"patient": "P01-pt", "_count": "1"},
        headers=headers(token),
        timeout=10,
    )
    assert search.status_code == 200 and search.json()["resourceType"] == "Bundle"
    value = str(uuid.uuid4())
    created = post(proxy.url, token, value)
    assert created.status_code == 201, created.text
    # Location is the sandbox's own absolute URL: the proxy rewrites no bodies or Location.
    assert created.headers["Location"].startswith(f"{ehr.fhir}/ServiceRequest/")
    assert landed(ehr, token, value) == 1
    # a chunked request body (a generator) goes upstream with a Content-Length
    chunked = requests.post(
        f"{proxy.url}/fhir/ServiceRequest",
        data=(
            part
            for part in (
                b'{"resourceType": "ServiceRequest", ',
                b'"status": "active", '
                b'"intent": "order", "subject": {"reference": "Patient/P01-pt"}}',
            )
        ),
        headers=headers(token),
        timeout=10,
    )
    assert chunked.status_code == 201, chunked.text
    # errors pass through untouched too
    missing = requests.get(f"{proxy.url}/fhir/Patient/nope", headers=headers(token), timeout=10)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    stats = proxy.stats
    assert stats["requests"] == stats["forwarded"] == stats["passed"] == 5
    assert [e["status"] for e in proxy.log] == [200, 200, 201, 201, 404]


def test_status_is_answered_without_forwarding(
    ehr: RunningSandbox, token: str, proxy: FaultProxy
) -> None:
    requests.delete(f"{ehr.base}/_sandbox/requests", timeout=10)
    proxy.add_fault("status", method="POST", path="/fhir/ServiceRequest", status=503, times=2)
    proxy.add_fault("status", method="POST", path="/fhir", status=429, retry_after=7)
    value = str(uuid.uuid4())
    # a GET does not match a POST fault
    assert requests.get(f"{proxy.url}/fhir/metadata", timeout=10).status_code == 200
    first, second, third = (post(proxy.url, token, value) for _ in range(3))
    assert first.status_code == second.status_code == 503
    outcome = first.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient"
    assert "Retry-After" not in first.headers
    assert third.status_code == 429 and third.headers["Retry-After"] == "7"
    assert landed(ehr, token, value) == 0
    assert posts_seen_by_sandbox(ehr) == 0
    fourth = post(proxy.url, token, value)
    assert fourth.status_code == 201
    assert landed(ehr, token, value) == 1
    stats = proxy.stats
    assert stats["status"] == 3 and stats["forwarded"] == 2  # metadata and the fourth POST
    assert proxy.faults == []


def test_custom_status_body_and_headers(proxy: FaultProxy) -> None:
    proxy.add_fault(
        "status",
        status=500,
        body={"resourceType": "OperationOutcome", "issue": [{"severity": "fatal"}]},
        headers={"X-Test": "yes"},
    )
    response = requests.get(f"{proxy.url}/fhir/metadata", timeout=10)
    assert response.status_code == 500
    assert response.json()["issue"][0]["severity"] == "fatal"
    assert response.headers["X-Test"] == "yes"


def test_reset_cuts_the_connection_without_forwarding(
    ehr: RunningSandbox, token: str, proxy: FaultProxy
) -> None:
    requests.delete(f"{ehr.base}/_sandbox/requests", timeout=10)
    proxy.add_fault("reset", method="POST", path="/fhir")
    value = str(uuid.uuid4())
    with pytest.raises(requests.ConnectionError):
        post(proxy.url, token, value)
    assert landed(ehr, token, value) == 0
    assert posts_seen_by_sandbox(ehr) == 0
    assert post(proxy.url, token, value).status_code == 201  # only the next one
    assert proxy.stats["reset"] == 1


def test_drop_after_forward_lands_but_the_client_never_hears(
    ehr: RunningSandbox, token: str, proxy: FaultProxy
) -> None:
    proxy.add_fault("drop_after_forward", method="POST", path="/fhir")
    value = str(uuid.uuid4())
    with pytest.raises(requests.ConnectionError):
        post(proxy.url, token, value)
    assert landed(ehr, token, value) == 1  # it did land
    stats = proxy.stats
    assert stats["drop_after_forward"] == 1 and stats["forwarded"] == 1
    # the same for a whole transaction Bundle
    proxy.add_fault("drop_after_forward", method="POST", path="/fhir", cut_at=0)
    other = str(uuid.uuid4())
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": service_request(other),
                "request": {
                    "method": "POST",
                    "url": "ServiceRequest",
                    "ifNoneExist": f"identifier={SYSTEM}|{other}",
                },
            }
        ],
    }
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{proxy.url}/fhir", json=bundle, headers=headers(token), timeout=10)
    assert landed(ehr, token, other) == 1


def test_delay_times_the_client_out_but_still_forwards(
    ehr: RunningSandbox, token: str, proxy: FaultProxy
) -> None:
    proxy.add_fault("delay", method="POST", path="/fhir", seconds=3)
    value = str(uuid.uuid4())
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        post(proxy.url, token, value, timeout=0.4)
    assert time.monotonic() - started < 2.5
    # forwarded at once, only the answer is late: it lands while the proxy still holds it
    deadline = time.monotonic() + 2
    while not landed(ehr, token, value) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert landed(ehr, token, value) == 1
    assert proxy.log[-1]["status"] == 201
    assert proxy.wait_idle(10)
    assert proxy.stats["delay"] == 1


def test_delay_before_forwarding_lands_later(
    ehr: RunningSandbox, token: str, proxy: FaultProxy
) -> None:
    proxy.add_fault("delay", method="POST", path="/fhir", seconds=2, stage="request")
    value = str(uuid.uuid4())
    with pytest.raises(requests.Timeout):
        post(proxy.url, token, value, timeout=0.3)
    assert landed(ehr, token, value) == 0  # not yet: the proxy still holds it
    assert proxy.wait_idle(10)
    assert landed(ehr, token, value) == 1  # the client gave up, the write landed anyway


def test_a_patient_client_gets_the_delayed_answer(proxy: FaultProxy) -> None:
    proxy.add_fault("delay", path="/fhir/metadata", seconds=0.5)
    started = time.monotonic()
    response = requests.get(f"{proxy.url}/fhir/metadata", timeout=10)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.5


def test_refuse_stops_accepting_connections_for_a_while(proxy: FaultProxy) -> None:
    assert requests.get(f"{proxy.url}/fhir/metadata", timeout=10).ok
    proxy.add_fault("refuse", seconds=2)
    assert proxy.refusing
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proxy.url}/fhir/metadata", timeout=5)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError) as refused:
        sock.settimeout(2)
        sock.connect(("127.0.0.1", proxy.port))
    assert refused.value.errno == errno.ECONNREFUSED
    deadline = time.monotonic() + 5
    while proxy.refusing and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests.get(f"{proxy.url}/fhir/metadata", timeout=10).ok  # the same port again
    assert proxy.stats["refuse"] == 1


def test_faults_are_taken_once_each_under_concurrency(proxy: FaultProxy) -> None:
    proxy.add_fault("status", path="/fhir/metadata", status=503, times=3)

    def get(_: int) -> int:
        return requests.get(f"{proxy.url}/fhir/metadata", timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(get, range(12)))
    assert sorted(statuses) == [200] * 9 + [503] * 3
    stats = proxy.stats
    assert stats["requests"] == 12 and stats["status"] == 3 and stats["passed"] == 9


def test_bad_faults_are_refused(proxy: FaultProxy) -> None:
    for kind, options in (
        ("explode", {}),
        ("status", {"times": 0}),
        ("delay", {"seconds": 0}),
        ("refuse", {"seconds": 10_000}),
        ("status", {"status": 42}),
        ("delay", {"seconds": 1, "stage": "later"}),
    ):
        with pytest.raises(ValueError):
            proxy.add_fault(kind, **options)
    with pytest.raises(ValueError):
        FaultProxy("https://127.0.0.1:1")


def test_unreachable_upstream_is_a_502() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    with FaultProxy(f"http://127.0.0.1:{port}", upstream_timeout=2) as proxy:
        response = requests.get(f"{proxy.url}/fhir/metadata", timeout=10)
        assert response.status_code == 502
        assert proxy.stats["errors"] == 1


def test_close_stops_it(ehr: RunningSandbox) -> None:
    proxy = FaultProxy(ehr.base)
    proxy.add_fault("delay", seconds=30, stage="request")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.get, f"{proxy.url}/fhir/metadata", timeout=20)
        time.sleep(0.3)
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 5
        with pytest.raises(requests.ConnectionError):
            pending.result(timeout=10)
    proxy.close()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proxy.url}/fhir/metadata", timeout=5)
    assert proxy.stats["forwarded"] == 0  # the held request was never sent on
