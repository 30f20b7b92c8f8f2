"""Appends never fork the chain: threads in one process (SQLite), separate OS processes on one
SQLite file, and separate OS processes on one PostgreSQL database."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from smartapp.audit import log as referral_log
from smartapp.audit.models import LogCheckpoint
from smartapp.audit.verify import verify
from smartapp.config import REPO_ROOT
from smartapp.db import Database
from tests.audit.conftest import open_log


def assert_one_chain(db: Database, public_key, writers: dict[str, int], every: int) -> list:
    """No fork, nothing lost: seq 1..N, every writer's events all there, verify passes."""
    total = sum(writers.values())
    with db.session() as session:
        rows = referral_log.events(session)
        report = verify(session, [public_key])
        checkpoints = session.scalar(select(func.count()).select_from(LogCheckpoint))
    assert report.ok, report.summary()
    assert [r.seq for r in rows] == list(range(1, total + 1))
    assert len({r.prev_hash for r in rows}) == total  # no two events share a predecessor
    per_writer = Counter(r.data["worker"] for r in rows)
    assert per_writer == Counter(writers)
    for writer in writers:
        assert sorted(r.data["i"] for r in rows if r.data["worker"] == writer) == list(
            range(writers[writer])
        )
    assert checkpoints == total // every
    return rows


def interleavings(rows) -> int:
    """How often consecutive events come from different writers (0: no real concurrency)."""
    return sum(a.data["worker"] != b.data["worker"] for a, b in zip(rows, rows[1:], strict=False))


def test_four_threads_one_sqlite_file(sqlite_url, signer):
    db = open_log(sqlite_url, signer, every=25)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(label: str) -> None:
        try:
            barrier.wait()
            for i in range(100):
                with db.session() as session:
                    referral_log.append(session, "launch", data={"worker": label, "i": i})
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    rows = assert_one_chain(db, signer.public_key, {f"t{n}": 100 for n in range(4)}, every=25)
    assert interleavings(rows) > 10
    db.engine.dispose()


def run_workers(
    url: str, key: Path, labels: list[str], count: int, every: int, pause: float = 0.0
) -> None:
    start_at = time.time() + 3.0
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.audit.worker",
                url,
                str(key),
                label,
                str(count),
                str(start_at),
                str(every),
                str(pause),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in labels
    ]
    for process in processes:
        _out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err


def test_two_processes_one_sqlite_file(sqlite_url, signer, key_path):
    db = open_log(sqlite_url, signer, every=50)
    # A short pause between appends, as between page views: in a tight loop the process that
    # holds the file wins again while the other sleeps in SQLite's busy handler (no fork, but
    # no overlap to speak of either).
    run_workers(sqlite_url, key_path, ["a", "b"], 200, every=50, pause=0.002)
    rows = assert_one_chain(db, signer.public_key, {"a": 200, "b": 200}, every=50)
    assert interleavings(rows) > 5
    db.engine.dispose()


def test_two_processes_one_postgresql_database(pg_url, signer, key_path):
    db = open_log(pg_url, signer, every=50)
    run_workers(pg_url, key_path, ["a", "b"], 200, every=50)
    rows = assert_one_chain(db, signer.public_key, {"a": 200, "b": 200}, every=50)
    assert interleavings(rows) > 5
    db.engine.dispose()


def test_threads_on_postgresql(pg_url, signer):
    db = open_log(pg_url, signer, every=20)

    def work(label: str) -> None:
        for i in range(50):
            with db.session() as session:
                referral_log.append(session, "launch", data={"worker": label, "i": i})

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_one_chain(db, signer.public_key, {f"t{n}": 50 for n in range(4)}, every=20)
    db.engine.dispose()
