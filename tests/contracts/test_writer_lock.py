"""Writes go through the session, so that on SQLite the referral log's writer lock comes
first (`smartapp.db._writer_lock_first_for_dml`, a `do_orm_execute` hook): a statement run on
`session.connection()` skips that hook. A write that took SQLite's write lock without the
writer lock makes the other writers poll SQLite's lock with its busy handler's sleeps of up to
100 ms: under 50 concurrent CDS calls the p99 went from about 0.36 s to 0.8-1.0 s when the
JWT id and the card's launch context were inserted that way. Only reads may use it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "smartapp"
ON_CONNECTION = re.compile(r"\.connection\(\)\.execute\((\w+)")
#: (module, statement) run on a session's connection: reads only, and the referral log's own
#: INSERT, which `chain._link` runs right after taking the writer lock itself (`_lock`).
READS = {("audit/chain.py", "_HEAD"), ("audit/chain.py", "_INSERT_EVENTS")}


def test_statements_on_a_sessions_connection_are_reads():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for match in ON_CONNECTION.finditer(path.read_text(encoding="utf-8")):
            found.add((path.relative_to(PACKAGE).as_posix(), match.group(1)))
    assert found <= READS, f"skips the writer lock on a write: {found - READS}"
    assert found, "the pattern no longer finds the one known read: update this test"
