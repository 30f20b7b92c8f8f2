"""CDS Hooks speed: Handoff served as in production (gunicorn with smartapp.web.gunicorn_conf,
smartapp.wsgi's app, a SQLite database in its own folder), driven by a CDS client with full
prefetch (the public charts, dates shifted to now) at 1, 10 and 50 concurrent requests; each
request carries its own ES384 JWT (signed before the clock starts), so every call pays the
signature check, the jti insert, the evaluation, the card and the log entry. The floor, in
the same run and the same server: a no-op endpoint (POST, same body, answers `{"cards": []}`)
at the same concurrency. Beside them, the verified no-op: what any correct call must do
before a card (the JWT's ES384 signature and claims checked, its jti kept against replay),
then no card; it shows how much of the time is the protocol's own security rather than the
card. Printed per level: p50 and p99 of each, the p99 ratio (service over no-op), and the
server's CPU time per call of each (user + system of gunicorn's processes, /proc); the last
line is one JSON object with `p99_ms_50`, `p99_noop_ms_50`, `p99_ratio_50` and the rest.

    python benchmarks/cds_hooks.py [--workers 2] [--threads 8] [--quick]

Target (issue 14): p99 <= 100 ms at 50 concurrent on a 2-core machine, <= 3x the no-op's p99.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.load import database  # noqa: E402
from benchmarks.load_stack import (  # noqa: E402
    HANDOFF_CONF,
    cpu_seconds,
    gunicorn,
    reserve_port,
    wait_until_up,
)

LEVELS = (1, 10, 50)
SERVICE = "handoff-patient-view"
ISSUER = "https://bench-ehr.example/cds"
NOOP = "/_bench/noop"
VERIFIED_NOOP = "/_bench/verified-noop"


def bench_app():
    """Handoff's production app (smartapp.wsgi) plus the no-op endpoint the floor is measured
    on: same server, same middleware (security headers, error pages), no work."""
    from flask import jsonify, request

    from smartapp.wsgi import app

    @app.post(NOOP)
    def noop():
        request.get_json(silent=True)
        return jsonify({"cards": []})

    @app.post(VERIFIED_NOOP)
    def verified_noop():
        """What every correct call must do before any card: check the JWT (ES384 signature,
        claims) and refuse a replay (the jti kept); then no card."""
        from smartapp.cdshooks.views import runtime, verified

        client = verified(runtime().settings.service_url(SERVICE))
        if isinstance(client, tuple):
            return client
        request.get_json(silent=True)
        return jsonify({"cards": []})

    return app


def charts(folder: Path) -> list[tuple[str, str, dict, bool]]:
    """(patient, encounter, prefetch, a card expected) per public chart, dates shifted to now
    as the sandbox shifts them."""
    from smartapp.cdshooks.prefetch import TEMPLATES
    from smartapp.sandbox.seed import scenario_resources

    shared = Path(os.environ.get("HANDOFF_SHARED_DIR") or REPO.parent / "shared") / "scenarios"
    cases = json.loads((shared / "expected.json").read_text())["cases"]
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for name, case in sorted(cases.items()):
        one = folder / "charts" / name
        one.mkdir(parents=True)
        shutil.copy(shared / f"{name}.json", one / f"{name}.json")
        resources = scenario_resources(one, now)
        prefetch: dict = {}
        for key, (rtype, _template) in TEMPLATES.items():
            found = [r for r in resources if r["resourceType"] == rtype]
            if rtype == "Patient":
                prefetch[key] = next((r for r in found if r["id"] == case["patient"]), None)
            else:
                entries = [{"resource": r} for r in found]
                prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        out.append((case["patient"], case["encounter"], prefetch, bool(case["expected"])))
    return out


def start(
    folder: Path, workers: int, threads: int, data: Path | None = None, url: str | None = None
):
    """Handoff under gunicorn, trusting the benchmark's CDS client; (process, url, key)."""
    from joserfc.jwk import ECKey

    from smartapp.audit.signing import load_signer
    from smartapp.cli import demo_registration
    from smartapp.db import Database
    from smartapp.launch.tokens import TokenCipher

    database_given = url
    port = reserve_port()
    url = f"http://127.0.0.1:{port}"
    launch = folder / "launch"
    (launch / "cds-clients").mkdir(parents=True)
    registration = demo_registration("http://127.0.0.1:9", client_id="handoff-bench")
    (launch / "sandbox.yaml").write_text(yaml.safe_dump(registration))
    key = ECKey.generate_key("P-384", parameters={"kid": "bench-1", "alg": "ES384"})
    jwks = {"keys": [key.as_dict(private=False)]}
    (launch / "cds-clients" / "bench.jwks.json").write_text(json.dumps(jwks))
    client = {
        "id": "bench-ehr",
        "name": "Benchmark EHR",
        "issuer": ISSUER,
        "registration": "sandbox",
        "jwks_file": "bench.jwks.json",
    }
    (launch / "cds-clients" / "bench.yaml").write_text(yaml.safe_dump(client))
    keys = folder / "keys"
    keys.mkdir(mode=0o700)
    signer = load_signer(keys / "audit-key.pem")
    (keys / "audit-key.pub.pem").write_text(signer.public_pem())
    data = data or folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    database_url = database_given or f"sqlite:///{data / 'handoff.sqlite'}"
    Database(database_url).migrate()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")} | {
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": database_url,
        "HANDOFF_PUBLIC_URL": url,
        "HANDOFF_LAUNCH_DIR": str(launch),
        "HANDOFF_SECRET_KEY": secrets.token_urlsafe(32),
        "HANDOFF_TOKEN_KEY": TokenCipher.new_key(),
        "HANDOFF_AUDIT_SIGNING_KEY": str(keys / "audit-key.pem"),
        "HANDOFF_KEYS_DIR": str(keys),
        "HANDOFF_INSTANCE_PATH": str(folder / "instance"),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
    }
    (folder / "metrics").mkdir()
    log = (folder / "server.log").open("ab")  # noqa: SIM115 (the server's stderr)
    command = gunicorn("benchmarks.cds_hooks:bench_app()", port, workers, threads, HANDOFF_CONF)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_until_up(process, f"{url}/")
    except BaseException:
        process.kill()
        print((folder / "server.log").read_text()[-3000:], file=sys.stderr)
        raise
    return process, url, key


def signed(key, aud: str) -> str:
    from joserfc import jwt

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 280, "jti": str(uuid.uuid4())}
    return jwt.encode({"alg": "ES384", "typ": "JWT", "kid": "bench-1"}, claims, key, ["ES384"])


def body(patient: str, encounter: str, prefetch: dict) -> bytes:
    return json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {
                "userId": "Practitioner/demo-ed-physician",
                "patientId": patient,
                "encounterId": encounter,
            },
            "prefetch": prefetch,
        }
    ).encode()


def run_level(url: str, jobs: list[tuple[str, bytes, dict, bool]], level: int) -> dict:
    """Send every job at `level` concurrent; latencies in ms, errors counted, and the answers
    without the card their chart has (over the time budget: no card rather than late)."""
    session_for = {}

    def one(job: tuple[str, bytes, dict, bool]) -> tuple[float, bool, bool]:
        import threading

        session = session_for.setdefault(threading.get_ident(), requests.Session())
        target, data, headers, card_expected = job
        started = time.perf_counter()
        response = session.post(target, data=data, headers=headers, timeout=60)
        took = (time.perf_counter() - started) * 1000
        ok = response.status_code == 200 and "cards" in response.json()
        missing = ok and card_expected and not response.json()["cards"]
        return took, ok, missing

    with ThreadPoolExecutor(level) as pool:
        results = list(pool.map(one, jobs))
    times = sorted(t for t, _, _ in results)
    return {
        "p50": round(statistics.median(times), 1),
        "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
        "errors": sum(1 for _, ok, _ in results if not ok),
        "no_card": sum(1 for _, _, missing in results if missing),
        "n": len(times),
    }


def jobs_for(url: str, key, cases: list, count: int, noop: bool, verified: bool = False) -> list:
    """`count` calls of the service (or of the no-op; of the verified no-op: `verified`)."""
    service_url = f"{url}/cds-services/{SERVICE}"
    target = f"{url}{VERIFIED_NOOP}" if verified else service_url
    out = []
    for i in range(count):
        patient, encounter, prefetch, card = cases[i % len(cases)]
        data = body(patient, encounter, prefetch)
        headers = {"Content-Type": "application/json"}
        if noop:
            out.append((f"{url}{NOOP}", data, headers, False))
        else:
            headers["Authorization"] = f"Bearer {signed(key, service_url)}"
            out.append((target, data, headers, card and not verified))
    return out


def measure_level(pid: int, url: str, key, cases: list, level: int, quick: bool) -> dict:
    """The no-op, the service and the verified no-op at `level` concurrent, with the server's
    CPU per call of each (gunicorn's processes, /proc); printed and returned as figures."""
    count = max(level * (4 if quick else 8), 40 if quick else 100)
    jobs = {
        "noop": jobs_for(url, key, cases, count, True),
        "cds": jobs_for(url, key, cases, count, False),
        "verified": jobs_for(url, key, cases, count, False, verified=True),
    }
    got = {}
    for name, some in jobs.items():
        before = cpu_seconds(pid)
        got[name] = run_level(url, some, level)
        got[name]["cpu"] = round((cpu_seconds(pid) - before) * 1000 / count, 2)
    cds, noop, verified = got["cds"], got["noop"], got["verified"]
    ratio = round(cds["p99"] / noop["p99"], 2) if noop["p99"] else None
    print(
        f"{level:>3} concurrent: CDS p50 {cds['p50']} ms p99 {cds['p99']} ms "
        f"({cds['errors']} errors, {cds['no_card']} over budget without their card, "
        f"n={cds['n']}); no-op p50 {noop['p50']} ms "
        f"p99 {noop['p99']} ms; p99 ratio {ratio}; server CPU per call "
        f"{cds['cpu']} ms (no-op {noop['cpu']} ms); verified no-op (JWT checked, jti kept, "
        f"no card) p50 {verified['p50']} ms p99 {verified['p99']} ms, CPU {verified['cpu']} ms",
        flush=True,
    )
    return {
        f"p50_ms_{level}": cds["p50"],
        f"p99_ms_{level}": cds["p99"],
        f"p50_noop_ms_{level}": noop["p50"],
        f"p99_noop_ms_{level}": noop["p99"],
        f"p50_verified_noop_ms_{level}": verified["p50"],
        f"p99_verified_noop_ms_{level}": verified["p99"],
        f"p99_ratio_{level}": ratio,
        f"errors_{level}": cds["errors"] + noop["errors"] + verified["errors"],
        f"no_card_over_budget_{level}": cds["no_card"],
        f"cpu_ms_per_call_{level}": cds["cpu"],
        f"cpu_noop_ms_per_call_{level}": noop["cpu"],
        f"cpu_verified_noop_ms_per_call_{level}": verified["cpu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--quick", action="store_true", help="fewer requests per level")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL (postgresql+psycopg://...): a fresh schema, dropped afterwards",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the SQLite database lives (default: the run's temp folder, on disk); "
        "e.g. /dev/shm to see the figures without the disk's commit (fsync) time",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="handoff-cds-bench-"))
    data = args.data_dir / folder.name if args.data_dir else None
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.database_url:
            database_url = stack.enter_context(database(args.database_url, False, folder))
        measure(args, folder, data, database_url)


def measure(args: argparse.Namespace, folder: Path, data: Path | None, database_url) -> None:
    """Start Handoff, warm it, run every level; print the figures."""
    process, url, key = start(folder, args.workers, args.threads, data, database_url)
    where = "postgresql" if database_url else str(data or "disk")
    figures: dict = {"workers": args.workers, "threads": args.threads, "data": where}
    try:
        cases = charts(folder)
        run_level(url, jobs_for(url, key, cases, 40, False), 4)  # warm up both
        run_level(url, jobs_for(url, key, cases, 40, True), 4)
        run_level(url, jobs_for(url, key, cases, 40, False, verified=True), 4)
        for level in LEVELS:
            figures |= measure_level(process.pid, url, key, cases, level, args.quick)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)
        if data:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
