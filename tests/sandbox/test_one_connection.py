"""The sandbox takes one database connection per request (issue 15 item 4): 64 physicians at
once (EHR launch, authorize, token, FHIR reads and a write each) against a pool of 5 with no
overflow, every request answered. Before, a request held the token check's connection while
waiting for a second one for the FHIR read, and 32 concurrent physicians exhausted the pool
("QueuePool limit of size 5 overflow 10 reached")."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from smartapp.sandbox import SandboxClient, create_sandbox_app
from smartapp.web.serving import reserve_port, serve_in_thread
from tests.sandbox.conftest import (
    CLIENT_ID,
    LAUNCH_URL,
    NOW,
    REDIRECT_URI,
    RunningSandbox,
    pinned_shared_dir,
    pkce_pair,
)

CONCURRENT = 64
POOL = 5
SCOPE = "launch openid fhirUser patient/*.rs patient/Task.c"


def physician(sandbox: RunningSandbox, barrier: threading.Barrier) -> list[int]:
    """One physician's launch and chart reads, started together with all the others; the
    status of every request made."""
    statuses: list[int] = []
    browser = requests.Session()
    sandbox = RunningSandbox(base=sandbox.base, app=sandbox.app, handle=sandbox.handle)
    sandbox.browser = browser
    barrier.wait(timeout=60)
    launched = sandbox.launch("P01-pt")
    verifier, challenge = pkce_pair()
    answer = sandbox.authorize(**sandbox.authorize_params(launched, SCOPE, challenge))
    statuses.append(answer.status_code)
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    token = sandbox.exchange(code, verifier)
    statuses.append(token.status_code)
    api = sandbox.api(token.json())
    for path in ("Patient/P01-pt", "Condition?patient=P01-pt", "Observation?patient=P01-pt"):
        statuses.append(api.get(f"{sandbox.fhir}/{path}", timeout=60).status_code)
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/P01-pt"},
    }
    statuses.append(api.post(f"{sandbox.fhir}/Task", json=task, timeout=60).status_code)
    return statuses


def test_64_concurrent_physicians_on_a_pool_of_5(tmp_path: Path) -> None:
    port = reserve_port()
    base = f"http://127.0.0.1:{port}"
    app = create_sandbox_app(
        base_url=base,
        database_url=f"sqlite:///{tmp_path / 'sandbox.sqlite'}",
        clients=[SandboxClient(CLIENT_ID, [REDIRECT_URI], LAUNCH_URL, name="Handoff (test)")],
        shared_dir=pinned_shared_dir(),
        seed=("scenarios",),
        now=NOW,
        pool_size=POOL,
    )
    assert app.extensions["sandbox"].db.engine.pool.size() == POOL
    handle = serve_in_thread(app, port=port)
    sandbox = RunningSandbox(base=base, app=app, handle=handle)
    try:
        barrier = threading.Barrier(CONCURRENT)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            runs = list(pool.map(lambda _: physician(sandbox, barrier), range(CONCURRENT)))
    finally:
        handle.stop()
    assert len(runs) == CONCURRENT
    assert all(statuses == [302, 200, 200, 200, 200, 201] for statuses in runs), runs
    # The pool never grew past its size (no overflow allowed) and every connection came back.
    assert app.extensions["sandbox"].db.engine.pool.checkedout() == 0
