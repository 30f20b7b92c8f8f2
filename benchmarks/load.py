"""Whole physician flows under load: the sandbox EHR and Handoff each served by gunicorn with
several worker processes; at 1, 4, 16, 32 and 64 concurrent physicians, each flow opens a
new ED visit's chart in the EHR (its launch), launches Handoff (PKCE, the EHR's authorize,
the callback, the screen reading the chart), accepts every suggestion and signs (the writes
to the EHR land before the signed page, or in the background right after).

    python benchmarks/load.py [--database-url URL] [--workers 2] [--threads 8] [--quick]

Printed per level: errors (a failed step, an unexpected page, a referral not written),
p50/p99 of a whole flow, throughput, and the CPU time per flow of Handoff's processes apart
from the EHR's (user + system, /proc, before and after the level). The floor, measured in the
same run before and after each level (their mean is the level's floor): Handoff's CPU for
as many requests to /healthz as a flow makes to Handoff (its HTTP serving cost alone);
Handoff's figure is printed as a ratio to it too.
The last line is one JSON object: `load_errors_64`, `handoff_cpu_ms_per_flow` (at 64),
per level figures and the floor. PostgreSQL: --database-url postgresql+psycopg://... (a
fresh schema is made and dropped), or $HANDOFF_TEST_POSTGRES_URL with --postgres.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urljoin

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.load_stack import LoadStack, start_stack  # noqa: E402
from smartapp.fhir.http import fresh_adapter  # noqa: E402

LEVELS = (1, 4, 16, 32, 64)
#: Requests a flow makes to Handoff: /launch, /callback, the screen, Sign, the signed page.
HANDOFF_REQUESTS_PER_FLOW = 5
WARM_UP = 4


def flows_at(level: int, quick: bool) -> int:
    """Flows run at a concurrency level: enough for a p99 at the high levels."""
    return max(level * (2 if quick else 3), 8 if quick else 16)


def one_flow(stack: LoadStack, patient: str) -> str | None:
    """A physician's whole flow; None when it went through, else what went wrong."""
    browser = requests.Session()
    # Like a browser, a connection the server may have closed while idle is not reused.
    adapter = fresh_adapter(4)
    browser.mount("http://", adapter)
    ehr, app = stack.ehr_url, stack.app_url
    try:
        browser.get(f"{ehr}/", timeout=60).raise_for_status()
        chart = browser.get(f"{ehr}/chart/{patient}", timeout=60)
        match = re.search(r'id="handoff-frame"[^>]*src="([^"]+)"', chart.text)
        if chart.status_code != 200 or not match:
            return f"chart {chart.status_code}"
        launch = re.search(r"launch=([^&\"]+)", match.group(1).replace("&amp;", "&"))
        query = urlencode({"iss": f"{ehr}/fhir", "launch": launch.group(1) if launch else ""})
        answer = browser.get(f"{app}/launch?{query}", allow_redirects=False, timeout=60)
        if answer.status_code != 302:
            return f"launch {answer.status_code}"
        answer = browser.get(answer.headers["Location"], allow_redirects=False, timeout=60)
        if answer.status_code not in (302, 303):
            return f"authorize {answer.status_code}"
        screen = browser.get(answer.headers["Location"], timeout=60)
        token = re.search(r'name="csrf_token" value="([^"]+)"', screen.text)
        if screen.status_code != 200 or not token or "/c/" not in screen.url:
            return f"screen {screen.status_code}"
        form = {"csrf_token": token.group(1), "consult-mode": "in-person"}
        for kind in re.findall(r'data-kind="([^"]+)"', screen.text):
            form[f"decision-{kind}"] = "accept"
        context = screen.url.rsplit("/", 1)[1]
        signed = browser.post(urljoin(app, f"/c/{context}/sign"), data=form, timeout=60)
        if signed.status_code != 200:
            return f"sign {signed.status_code}"
        return None
    except requests.RequestException as exc:
        return f"{type(exc).__name__}"
    finally:
        browser.close()


def unwritten(database_url: str, patients: list[str], seconds: float = 60.0) -> int:
    """Referrals of these signed visits not written to the EHR after up to `seconds` (each
    flow signs one; a missing referral counts too)."""
    from sqlalchemy import select

    from smartapp.db import Database, Referral

    database = Database(database_url)
    deadline = time.monotonic() + seconds
    try:
        while True:
            with database.session() as session:
                rows = session.execute(
                    select(Referral.patient_id, Referral.status).where(
                        Referral.patient_id.in_(patients)
                    )
                ).all()
            written = sum(1 for _, status in rows if status == "written")
            if written == len(patients) or time.monotonic() > deadline:
                return len(patients) - written
            time.sleep(0.5)
    finally:
        database.engine.dispose()


def run_level(stack: LoadStack, level: int, patients: list[str]) -> dict:
    """`patients` flows, `level` at a time: latencies, errors, CPU per flow."""
    latencies: list[float] = []
    errors: list[str] = []
    signed: list[str] = []
    lock = threading.Lock()

    def timed(patient: str) -> None:
        started = time.perf_counter()
        error = one_flow(stack, patient)
        with lock:
            latencies.append(time.perf_counter() - started)
            if error:
                errors.append(error)
            else:
                signed.append(patient)

    before = stack.cpu()
    wall = time.perf_counter()
    with ThreadPoolExecutor(level) as pool:
        list(pool.map(timed, patients))
    wall = time.perf_counter() - wall
    missing = unwritten(stack.database_url, signed)  # a failed flow is counted once, above
    after = stack.cpu()
    ordered = sorted(latencies)
    per_flow = {k: round((after[k] - before[k]) * 1000 / len(patients), 1) for k in after}
    return {
        "concurrent": level,
        "flows": len(patients),
        "errors": len(errors) + missing,
        "error_kinds": sorted(set(errors)) + ([f"{missing} not written"] if missing else []),
        "p50_ms": round(statistics.median(ordered) * 1000),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000),
        "flows_per_s": round(len(patients) / wall, 2),
        "handoff_cpu_ms_per_flow": per_flow["handoff"],
        "ehr_cpu_ms_per_flow": per_flow["ehr"],
    }


def floor_ms(stack: LoadStack, requests_count: int = 400) -> float:
    """Handoff's CPU per flow for serving HANDOFF_REQUESTS_PER_FLOW trivial requests."""
    session = requests.Session()
    before = stack.cpu()["handoff"]
    for _ in range(requests_count):
        session.get(f"{stack.app_url}/healthz", timeout=30)
    spent = stack.cpu()["handoff"] - before
    return round(spent * 1000 / requests_count * HANDOFF_REQUESTS_PER_FLOW, 2)


@contextmanager
def database(url: str | None, postgres: bool, folder: Path) -> Iterator[str]:
    """A SQLite file in `folder`, or a fresh PostgreSQL schema dropped afterwards."""
    url = url or (os.environ.get("HANDOFF_TEST_POSTGRES_URL") if postgres else None)
    if postgres and not url:
        raise SystemExit("--postgres needs $HANDOFF_TEST_POSTGRES_URL or --database-url")
    if not url:
        (folder / "data").mkdir()
        yield f"sqlite:///{folder / 'data' / 'handoff.sqlite'}"
        return
    from sqlalchemy import create_engine, make_url, text

    schema = f"load_{secrets.token_hex(4)}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def measure(args: argparse.Namespace) -> dict:
    """Start the stack, warm it, run every level; the figures."""
    levels = tuple(int(x) for x in args.levels.split(","))
    counts = [flows_at(level, args.quick) for level in levels]
    with tempfile.TemporaryDirectory(prefix="handoff-load-") as tmp:
        folder = Path(tmp)
        with database(args.database_url, args.postgres, folder) as url:
            stack = start_stack(folder, url, WARM_UP + sum(counts), args.workers, args.threads)
            try:
                patients = iter(stack.patients)
                warm = [next(patients) for _ in range(WARM_UP)]
                run_level(stack, 2, warm)
                floors = [floor_ms(stack)]
                rows = []
                for level, count in zip(levels, counts, strict=True):
                    row = run_level(stack, level, [next(patients) for _ in range(count)])
                    # the floor on either side of the level (this machine's speed drifts
                    # within minutes: one floor for every level moved the ratios by a third)
                    floors.append(floor_ms(stack))
                    floor = round((floors[-2] + floors[-1]) / 2, 2)
                    row["floor_ms"] = floor
                    row["handoff_to_floor"] = round(row["handoff_cpu_ms_per_flow"] / floor, 1)
                    rows.append(row)
                    print_row(row)
            finally:
                stack.stop()
                if args.server_log:
                    Path(args.server_log).write_bytes((folder / "servers.log").read_bytes())
    kind = "postgresql" if "postgresql" in url else "sqlite"
    return {"database": kind, "floor_ms": statistics.median(floors), "levels": rows}


def print_row(row: dict) -> None:
    print(
        f"{row['concurrent']:>4} concurrent  {row['flows']:>4} flows  errors {row['errors']:>3}  "
        f"p50 {row['p50_ms']:>6} ms  p99 {row['p99_ms']:>6} ms  {row['flows_per_s']:>6} flows/s  "
        f"Handoff CPU {row['handoff_cpu_ms_per_flow']:>6} ms/flow "
        f"({row['handoff_to_floor']}x floor of {row['floor_ms']} ms)  "
        f"EHR CPU {row['ehr_cpu_ms_per_flow']:>6} ms/flow"
        + (f"  [{', '.join(row['error_kinds'])}]" if row["error_kinds"] else ""),
        flush=True,
    )


def figures(result: dict) -> dict:
    """The keys benchmarks/scale.py reports: errors and Handoff CPU per flow at 64, with
    that level's floor and the ratio to it (the machine's speed moves the CPU figure by
    more than a third within a day; the ratio moves far less)."""
    top = max(result["levels"], key=lambda r: r["concurrent"])
    return {
        "load_errors_64": top["errors"] if top["concurrent"] == 64 else None,
        "handoff_cpu_ms_per_flow": top["handoff_cpu_ms_per_flow"],
        "handoff_cpu_floor_ms": top["floor_ms"],
        "handoff_cpu_to_floor": top["handoff_to_floor"],
    }


def scale_keys(argv: list[str] | None = None) -> dict:
    """The keys benchmarks/scale.py prints (`load_errors_64`, `handoff_cpu_ms_per_flow`, the
    floor and ratio beside), from a run with `argv` (default: every level, SQLite; add
    `--database-url` for PostgreSQL); the table is printed on the way."""
    return figures(measure(parse(argv)))


def run(argv: list[str] | None = None) -> dict:
    """Parse arguments, measure, print the table; the result with the two keys on top."""
    result = measure(parse(argv))
    return figures(result) | result


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="Handoff's database (default: a SQLite file)")
    parser.add_argument("--postgres", action="store_true", help="$HANDOFF_TEST_POSTGRES_URL")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--quick", action="store_true", help="fewer flows per level")
    parser.add_argument("--server-log", help="keep the servers' error log in this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(run()))
