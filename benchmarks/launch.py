"""The physician's screen after the token exchange, against one FHIR batch fetch of the same
chart from the same EHR, measured side by side in one run (issue 13).

    python benchmarks/launch.py [--launches N] [--patient P01-pt]

A sandbox EHR and Handoff run on local ports in this process's threads (as the tests run
them: real HTTP, real OAuth, SQLite). Each launch goes through the EHR launch and the token
exchange; then the screen's GET (/c/<context>: the chart read, the evaluation, the render,
what was shown recorded) is timed, and right after it one FHIR batch of the same reads and
searches Handoff makes (`smartapp.fhir.chart.chart_searches`), with a token of its own, is
POSTed to the same EHR and its JSON parsed. The ratio is the median screen time over the
median batch time (at least 20 launches). The last line printed is one JSON object:
``{"screen_to_batch", "screen_ms", "batch_ms", "launches"}``.
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
from tests.stacks import start_stack  # noqa: E402


def screen_time(app_url: str, ehr_url: str, patient_id: str) -> float:
    """One launch up to the callback (the token exchange), then the screen's GET, timed."""
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
    with tempfile.TemporaryDirectory() as folder:
        stack = start_stack(Path(folder), SHARED_DIR)
        try:
            app_url = f"http://127.0.0.1:{stack.app_port}"
            fhir = f"{stack.ehr_url}/fhir"
            token = token_for(stack.ehr_url, args.patient, TEST_READER, TEST_READER_REDIRECT)
            encounter = args.patient.replace("-pt", "-enc")
            searches = chart_searches(args.patient, encounter, datetime.now(UTC), 30)
            session = requests.Session()
            for _ in range(3):  # warm both sides (imports, caches, connections)
                screen_time(app_url, stack.ehr_url, args.patient)
                batch_time(session, fhir, token["access_token"], searches)
            screens, batches = [], []
            for _ in range(launches):
                screens.append(screen_time(app_url, stack.ehr_url, args.patient))
                batches.append(batch_time(session, fhir, token["access_token"], searches))
        finally:
            stack.stop()
    screen_ms = statistics.median(screens) * 1000
    batch_ms = statistics.median(batches) * 1000
    print(f"screen after the token exchange: median {screen_ms:.1f} ms over {launches} launches")
    print(f"one FHIR batch of the same chart: median {batch_ms:.1f} ms")
    result = {
        "screen_to_batch": round(screen_ms / batch_ms, 3),
        "screen_ms": round(screen_ms, 2),
        "batch_ms": round(batch_ms, 2),
        "launches": launches,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
