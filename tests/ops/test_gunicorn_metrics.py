"""Metrics under gunicorn (issue 15 item 5): two worker processes, Handoff's production
settings (smartapp/web/gunicorn_conf.py); /metrics adds up what every worker counted
(prometheus-client's multi-process mode), and the access log carries the request id."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys

import requests
import yaml

from smartapp.audit.signing import load_signer
from smartapp.cli import demo_registration
from smartapp.launch.tokens import TokenCipher
from smartapp.web.serving import reserve_port
from tests.stacks import started

REQUESTS = 40


def test_metrics_add_up_every_worker(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    load_signer(keys / "audit-key.pem")
    launch_dir = tmp_path / "launch"
    launch_dir.mkdir()
    registration = demo_registration("http://127.0.0.1:9", client_id="handoff-ops")
    (launch_dir / "sandbox.yaml").write_text(yaml.safe_dump(registration))
    port = reserve_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "PROMETHEUS"))}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'handoff.sqlite'}",
        "HANDOFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HANDOFF_LAUNCH_DIR": str(launch_dir),
        "HANDOFF_SECRET_KEY": secrets.token_urlsafe(32),
        "HANDOFF_TOKEN_KEY": TokenCipher.new_key(),
        "HANDOFF_AUDIT_SIGNING_KEY": str(keys / "audit-key.pem"),
        "HANDOFF_KEYS_DIR": str(keys),
        "HANDOFF_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:smartapp.web.gunicorn_conf",
                "--workers",
                "2",
                "--no-control-socket",
                "--bind",
                f"127.0.0.1:{port}",
                "smartapp.wsgi:app",
            ],
            env=env,
            stdout=out,
            stderr=out,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            started(process, f"{url}/healthz", seconds=60)
            for n in range(REQUESTS):  # a new connection each: both workers take some
                requests.get(
                    f"{url}/healthz", headers={"X-Request-Id": f"ops-test-{n:04d}"}, timeout=10
                )
            body = requests.get(f"{url}/metrics", timeout=10).text
        finally:
            process.terminate()
            process.wait(20)
    counted = re.search(
        r'handoff_http_request_seconds_count\{method="GET",route="/healthz",status="2xx"\} (\S+)',
        body,
    )
    assert counted, body[:2000]
    assert float(counted.group(1)) >= REQUESTS  # plus the start-up probes
    lines = log.read_text().splitlines()
    access = [json.loads(line) for line in lines if line.startswith("{") and "ops-test-" in line]
    assert access and all(line["logger"] == "gunicorn.access" for line in access)
    assert {re.search(r"rid=(\S+)", line["message"]).group(1) for line in access} >= {
        "ops-test-0000",
        f"ops-test-{REQUESTS - 1:04d}",
    }
    workers = {line.split("pid: ")[1].split(")")[0] for line in lines if "Booting worker" in line}
    assert len(workers) == 2
