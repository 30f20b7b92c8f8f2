"""Two app instances (gunicorn, two workers each) on one PostgreSQL, launched into at the same
time: one consistent referral log, no fork, no lost event, and `audit verify` passes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from sqlalchemy import create_engine, func, make_url, select, text

from smartapp.audit.signing import load_signer
from smartapp.cli import demo_registration
from smartapp.db import Database, LogEvent
from smartapp.launch.tokens import TokenCipher
from smartapp.web.serving import reserve_port, serve_in_thread
from tests import launch_flow
from tests.stacks import started

PATIENTS = ["P01-pt", "P02-pt", "P03-pt", "P04-pt", "P05-pt", "P07-pt", "P11-pt", "P12-pt"]


@pytest.fixture
def pg_url():
    base = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("HANDOFF_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    schema = f"mi_{secrets.token_hex(4)}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def gunicorn(port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--threads",
            "4",
            "--bind",
            f"127.0.0.1:{port}",
            "smartapp.wsgi:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return started(process, f"http://127.0.0.1:{port}/")


def test_two_instances_one_chain(tmp_path, shared_dir, pg_url):
    from smartapp.sandbox import SandboxClient, create_sandbox_app

    ports = [reserve_port(), reserve_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    ehr_port = reserve_port()
    ehr_url = f"http://127.0.0.1:{ehr_port}"
    ehr = serve_in_thread(
        create_sandbox_app(
            base_url=ehr_url,
            database_url=f"sqlite:///{tmp_path / 'sandbox.sqlite'}",
            clients=[
                SandboxClient(
                    client_id="handoff-mi",
                    redirect_uris=[f"{u}/callback" for u in urls],
                    launch_url=f"{urls[0]}/launch",
                )
            ],
            shared_dir=shared_dir,
            seed=("scenarios",),
        ),
        "127.0.0.1",
        ehr_port,
    )
    launch_dir = tmp_path / "launch"
    launch_dir.mkdir()
    registration = demo_registration(ehr_url, client_id="handoff-mi")
    (launch_dir / "sandbox.yaml").write_text(yaml.safe_dump(registration))
    key_path = tmp_path / "audit-key.pem"
    signer = load_signer(key_path)  # one signing key for the deployment
    (tmp_path / "audit-key.pub.pem").write_text(signer.public_pem())
    Database(pg_url).migrate()  # the schema exists before two instances start

    common = os.environ | {
        "DATABASE_URL": pg_url,
        "HANDOFF_LAUNCH_DIR": str(launch_dir),
        "HANDOFF_SECRET_KEY": secrets.token_urlsafe(32),
        "HANDOFF_TOKEN_KEY": TokenCipher.new_key(),
        "HANDOFF_AUDIT_SIGNING_KEY": str(key_path),
        "HANDOFF_AUDIT_CHECKPOINT_EVERY": "10",
    }
    instances = [
        gunicorn(port, common | {"HANDOFF_PUBLIC_URL": url})
        for port, url in zip(ports, urls, strict=True)
    ]
    try:

        def one_launch(index: int) -> int:
            app_url = urls[index % 2]
            launch = launch_flow.full(app_url, ehr_url, PATIENTS[index % len(PATIENTS)])
            assert launch.final.status_code == 200, launch.final.text[:200]
            again = launch.browser.get(launch.final.url, timeout=20)
            assert again.status_code == 200
            return 3  # launch + suggestions shown twice

        with ThreadPoolExecutor(max_workers=8) as pool:
            expected = sum(pool.map(one_launch, range(32)))
    finally:
        for process in instances:
            process.terminate()
        for process in instances:
            process.wait(15)
        ehr.stop()

    database = Database(pg_url)
    with database.session() as session:
        count = session.scalar(select(func.count()).select_from(LogEvent))
        seqs = list(session.scalars(select(LogEvent.seq).order_by(LogEvent.seq)))
    assert count == expected == 96  # no lost event
    assert seqs == list(range(seqs[0], seqs[0] + count))  # one line, no gap, no fork
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartapp.audit.cli",
            "verify",
            "--database-url",
            pg_url,
            "--public-key",
            str(tmp_path / "audit-key.pub.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=common,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith(f"OK: {count} events")
    database.engine.dispose()
