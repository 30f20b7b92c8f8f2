"""Issue 9 item 16: production start on a fresh database. Two gunicorn workers and an outbox
worker process start together; schema migrations run exactly once (the others wait on the lock
and find them done), nobody fails to boot, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, make_url, select, table, text

from smartapp.db import Database, alembic_config
from smartapp.web.serving import reserve_port

ROUNDS = 2  # fresh databases per backend: the race is a matter of timing


def production_env(tmp_path: Path, database_url: str, port: int) -> dict:
    """A production start: settings from the environment, keys apart from the data."""
    launch = tmp_path / "launch"
    launch.mkdir(exist_ok=True)
    registration = {
        "id": "ehr",
        "name": "Hospital EHR",
        "iss": "https://ehr.hospital.example/fhir",
        "client_id": "handoff",
        "frame_ancestors": ["https://ehr.hospital.example"],
    }
    (launch / "ehr.yaml").write_text(yaml.safe_dump(registration))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    return env | {
        "DATABASE_URL": database_url,
        "HANDOFF_INSTANCE_PATH": str(tmp_path / "instance"),
        "HANDOFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HANDOFF_LAUNCH_DIR": str(launch),
    }


def start_together(env: dict, port: int, logs: Path) -> list[subprocess.Popen]:
    """`gunicorn -w 2 smartapp.wsgi:app` and `handoff outbox worker`, at the same moment."""
    commands = {
        "gunicorn": [sys.executable, "-m", "gunicorn", "--workers", "2",
                     "--bind", f"127.0.0.1:{port}", "smartapp.wsgi:app"],
        "worker": [sys.executable, "-m", "smartapp.cli", "outbox", "worker", "--poll", "0.5"],
    }  # fmt: skip
    return [
        subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                         stderr=(logs / f"{name}.log").open("w"))
        for name, args in commands.items()
    ]  # fmt: skip


def assert_all_started(processes: list[subprocess.Popen], port: int, logs: Path) -> None:
    gunicorn, worker = processes
    deadline = time.monotonic() + 90
    answered = 0
    while time.monotonic() < deadline and answered < 6:  # both gunicorn workers, a few times
        if gunicorn.poll() is not None:
            break
        try:
            answered += requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
        except requests.RequestException:
            time.sleep(0.3)
    time.sleep(2)  # a worker that failed to boot takes gunicorn down within this
    stderr = (logs / "gunicorn.log").read_text() + (logs / "worker.log").read_text()
    assert answered == 6 and gunicorn.poll() is None, stderr[-3000:]
    assert worker.poll() is None, stderr[-3000:]
    assert "Worker failed to boot" not in stderr and "already exists" not in stderr
    assert "Traceback" not in stderr, stderr[-3000:]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def assert_migrated_once(url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    database = Database(url)
    assert database.current_revision() == head
    with database.engine.connect() as connection:
        rows = connection.scalar(select(func.count()).select_from(table("alembic_version")))
    assert rows == 1
    database.engine.dispose()


def test_fresh_sqlite_two_workers_and_an_outbox_worker(tmp_path):
    for round_ in range(ROUNDS):
        folder = tmp_path / f"round{round_}"
        (folder / "data").mkdir(parents=True)
        url = f"sqlite:///{folder / 'data' / 'handoff.sqlite'}"
        port = reserve_port()
        processes = start_together(production_env(folder, url, port), port, folder)
        try:
            assert_all_started(processes, port, folder)
        finally:
            stop(processes)
        assert_migrated_once(url)


@pytest.fixture
def pg_base():
    base = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("HANDOFF_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    return base


def test_fresh_postgresql_two_workers_and_an_outbox_worker(tmp_path, pg_base):
    admin = create_engine(pg_base)
    for round_ in range(ROUNDS):
        schema = f"race_{secrets.token_hex(4)}"
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = make_url(pg_base).update_query_dict({"options": f"-csearch_path={schema}"})
            url = url.render_as_string(hide_password=False)
            folder = tmp_path / f"round{round_}"
            folder.mkdir()
            port = reserve_port()
            processes = start_together(production_env(folder, url, port), port, folder)
            try:
                assert_all_started(processes, port, folder)
            finally:
                stop(processes)
            assert_migrated_once(url)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
