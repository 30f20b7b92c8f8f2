"""The physician's screen after the token exchange, against one FHIR batch fetch of the same
chart from the same EHR, measured side by side in one run (issue 13).

    python benchmarks/launch.py [--launches N] [--patient P01-pt]

A sandbox EHR and Handoff run on local ports, each in a process of its own (as an EHR and
Handoff run: neither shares an interpreter with the other or with this client; real HTTP, real
OAuth, SQLite). Each launch goes through the EHR launch and the token
exchange; then the screen's GET (/c/<context>: the chart read, the evaluation, the render,
what was shown recorded) is timed, and right after it one FHIR batch of the same reads and
searches Handoff makes (`smartapp.fhir.chart.chart_searches`), with a token of its own, is
POSTed to the same EHR and its JSON parsed. The ratio is the median screen time over the
median batch time (at least 20 launches). Beside them, the read-only floor: a route added to
Handoff's server for this benchmark that does only what any screen must do before it can
evaluate (the browser's launch checked, the launch and its token loaded, the chart read with
Handoff's reader), then answers 204 with no page. The last line printed is one JSON object:
``{"read_only_to_batch", "read_only_ms", "healthz_ms", "screen_to_batch", "screen_ms",
"batch_ms", "launches"}`` (`healthz_ms`: Handoff's server answering /healthz, the HTTP hop
alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartapp.fhir.chart import _batch_of, chart_searches  # noqa: E402
from tests.conftest import TEST_READER, TEST_READER_REDIRECT  # noqa: E402
from tests.launch_flow import authorize, start  # noqa: E402
from tests.shared import SHARED_DIR  # noqa: E402
from tests.smart_helpers import token_for  # noqa: E402
from tests.stacks import started  # noqa: E402


def serve_ehr(folder: Path, ehr_port: int, app_port: int) -> None:
    """The sandbox EHR with the scenario charts, in this (child) process."""
    from smartapp.sandbox import SandboxClient, create_sandbox_app
    from smartapp.web.serving import serve_in_thread

    quiet()
    app_url = f"http://127.0.0.1:{app_port}"
    ehr = create_sandbox_app(
        base_url=f"http://127.0.0.1:{ehr_port}",
        database_url=f"sqlite:///{folder / 'sandbox.sqlite'}",
        clients=[
            SandboxClient(
                client_id="handoff-test",
                redirect_uris=[f"{app_url}/callback"],
                launch_url=f"{app_url}/launch",
            ),
            SandboxClient(
                client_id=TEST_READER,
                redirect_uris=[TEST_READER_REDIRECT],
                launch_url="http://127.0.0.1:9/launch",
                name="Test reader",
            ),
        ],
        shared_dir=SHARED_DIR,
        seed=("scenarios",),
        test_controls=True,
    )
    serve_in_thread(ehr, "127.0.0.1", ehr_port).thread.join()


def serve_handoff(folder: Path, ehr_port: int, app_port: int) -> None:
    """Handoff registered with that EHR, in this (child) process."""
    from tests.conftest import start_app, write_registration

    quiet()
    write = {"profile": "fhir-rest", "doc_status": "final", "part2_program": False}
    write["coach_team"] = {"display": "Peer recovery coach team"}
    launch_dir = write_registration(
        folder / "launch", f"http://127.0.0.1:{ehr_port}", client_id="handoff-test", write=write
    )
    app = start_app(folder / "app", app_port, launch_dir)
    add_read_only(app.app)
    app.thread.join()


READ_ONLY = "/_bench/read/"


def add_read_only(app) -> None:
    """The floor of any screen, on Handoff's own server: what it must do before it can
    evaluate anything (the browser's launch checked, the launch and its token loaded, the
    chart read with Handoff's reader over its connections to the EHR), then no page (204)."""
    from datetime import UTC, datetime

    from smartapp.screen import service, views
    from smartapp.services import current_services

    @app.get(f"{READ_ONLY}<context_id>")
    def read_only(context_id: str):
        context = views.load_context(context_id)
        now = datetime.now(UTC)
        service.read_chart(current_services(), context, views.settings(), now)
        return "", 204


def quiet() -> None:
    import logging

    logging.disable(logging.INFO)


def start_servers(folder: Path) -> tuple[list, str, str]:
    """The EHR and Handoff, each in a process of its own: (processes, EHR URL, app URL)."""
    import multiprocessing

    from smartapp.web.serving import reserve_port

    ehr_port, app_port = reserve_port(), reserve_port()
    fork = multiprocessing.get_context("fork")
    ehr_url, app_url = f"http://127.0.0.1:{ehr_port}", f"http://127.0.0.1:{app_port}"
    processes = []
    for target, url in ((serve_ehr, f"{ehr_url}/fhir/metadata"), (serve_handoff, app_url)):
        process = fork.Process(target=target, args=(folder, ehr_port, app_port), daemon=True)
        process.start()
        processes.append(started(process, url, 60))
    return processes, ehr_url, app_url


def screen_time(app_url: str, ehr_url: str, patient_id: str) -> tuple[float, float]:
    """One launch up to the callback (the token exchange), then the screen's GET, timed; and
    then the read-only floor (`add_read_only`) for the same launch, timed."""
    launch = authorize(start(app_url, ehr_url, patient_id))
    answer = launch.browser.get(launch.callback_url, allow_redirects=False, timeout=30)
    while answer.status_code in (302, 303) and "/c/" not in answer.headers["Location"]:
        answer = launch.browser.get(
            urljoin(launch.callback_url, answer.headers["Location"]),
            allow_redirects=False,
            timeout=30,
        )
    screen = urljoin(launch.callback_url, answer.headers["Location"])
    started = time.perf_counter()
    page = launch.browser.get(screen, timeout=30)
    elapsed = time.perf_counter() - started
    if page.status_code != 200 or 'class="screen-title"' not in page.text:
        raise SystemExit(f"the screen did not render: HTTP {page.status_code}")
    context_id = screen.rstrip("/").rsplit("/", 1)[-1]
    started = time.perf_counter()
    floor = launch.browser.get(urljoin(app_url, f"{READ_ONLY}{context_id}"), timeout=30)
    read_only = time.perf_counter() - started
    if floor.status_code != 204:
        raise SystemExit(f"the read-only floor failed: HTTP {floor.status_code}")
    return elapsed, read_only


def hop_time(session: requests.Session, app_url: str) -> float:
    """Handoff's server answering /healthz (alive: no database, no EHR): the HTTP hop from
    the browser to Handoff that every screen pays and the batch does not."""
    started = time.perf_counter()
    answer = session.get(f"{app_url}/healthz", timeout=30)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    return elapsed


def batch_time(session: requests.Session, fhir: str, token: str, searches: list[str]) -> float:
    """One FHIR batch of the chart's reads and searches, sent and parsed."""
    started = time.perf_counter()
    answer = session.post(
        fhir,
        json=_batch_of(searches),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
        timeout=30,
    )
    answer.raise_for_status()
    bundle = answer.json()
    elapsed = time.perf_counter() - started
    if bundle.get("type") != "batch-response":
        raise SystemExit("the EHR did not answer the batch")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=25)
    parser.add_argument("--patient", default="P01-pt")
    args = parser.parse_args()
    launches = max(args.launches, 20)
    quiet()
    with tempfile.TemporaryDirectory() as folder:
        processes, ehr_url, app_url = start_servers(Path(folder))
        try:
            fhir = f"{ehr_url}/fhir"
            token = token_for(ehr_url, args.patient, TEST_READER, TEST_READER_REDIRECT)
            encounter = args.patient.replace("-pt", "-enc")
            searches = chart_searches(args.patient, encounter, datetime.now(UTC), 30)
            session = requests.Session()
            for _ in range(3):  # warm both sides (imports, caches, connections)
                screen_time(app_url, ehr_url, args.patient)
                batch_time(session, fhir, token["access_token"], searches)
            screens, reads, batches, hops = [], [], [], []
            for _ in range(launches):
                screen, read = screen_time(app_url, ehr_url, args.patient)
                screens.append(screen)
                reads.append(read)
                batches.append(batch_time(session, fhir, token["access_token"], searches))
                hops.append(hop_time(session, app_url))
        finally:
            for process in processes:
                process.kill()
    screen_ms = statistics.median(screens) * 1000
    batch_ms = statistics.median(batches) * 1000
    read_ms = statistics.median(reads) * 1000
    hop_ms = statistics.median(hops) * 1000
    print(f"screen after the token exchange: median {screen_ms:.1f} ms over {launches} launches")
    print(f"one FHIR batch of the same chart: median {batch_ms:.1f} ms")
    print(
        f"read-only floor (launch checked, chart read, no evaluation, no page): median "
        f"{read_ms:.1f} ms, {read_ms / batch_ms:.2f}x the batch"
    )
    print(f"Handoff's server answering /healthz: median {hop_ms:.2f} ms")
    result = {
        "read_only_to_batch": round(read_ms / batch_ms, 3),
        "read_only_ms": round(read_ms, 2),
        "healthz_ms": round(hop_ms, 2),
        "screen_to_batch": round(screen_ms / batch_ms, 3),
        "screen_ms": round(screen_ms, 2),
        "batch_ms": round(batch_ms, 2),
        "launches": launches,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
