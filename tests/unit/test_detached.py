"""`smartapp.detached`: a row read by Core and given as a detached instance is what a session
gives after it ends: every column loaded, its identity, no pending change; merged into a
session without a load it emits no SQL, and a change to it is seen as one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, inspect

from smartapp.db import Database, LaunchContext, Referral
from smartapp.detached import DetachedJoinReader, DetachedReader
from tests.pgschema import migrated

CONTEXT = {
    "id": "ctx-1",
    "browser_id": "b",
    "registration_id": "sandbox",
    "iss": "http://ehr.test/fhir",
    "patient_id": "p1",
    "encounter_id": "e1",
    "scope": "launch",
    "need_patient_banner": 1,
    "token_ciphertext": b"\x00secret",
    "token_endpoint": "http://ehr.test/token",
    "shown": {"suggestions": [{"kind": "prc-consult"}], "evaluated_at": "2026-12-05T10:00:00Z"},
    "visit_key": "v-1",
    "created_at": datetime(2026, 12, 5, 10, 0, tzinfo=UTC),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path: Path) -> Iterator[Database]:
    with migrated(request.param, tmp_path, "det") as database:
        with database.session() as session:
            session.add(LaunchContext(**CONTEXT))
        yield database


def test_a_detached_row_is_what_a_session_gives(db):
    with db.session() as session:
        loaded = session.get(LaunchContext, "ctx-1")
    with db.read() as connection:
        read = DetachedReader(LaunchContext, "id").one(connection, id="ctx-1")
        assert DetachedReader(LaunchContext, "id").one(connection, id="nope") is None
    assert read is not None and loaded is not None
    for key in [attribute.key for attribute in inspect(LaunchContext).column_attrs]:
        assert getattr(read, key) == getattr(loaded, key), key
    state = inspect(read)
    assert state.detached and not state.modified and not state.unloaded
    assert state.key == inspect(loaded).key

    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    with db.session() as session:
        merged = session.merge(read, load=False)  # as loaded: nothing to read, nothing to write
        assert sent == [] and not session.dirty
        merged.scope = "launch openid"
        assert session.dirty
    with db.read() as connection:
        again = DetachedReader(LaunchContext, "id").one(connection, id="ctx-1")
    assert again is not None and again.scope == "launch openid"


def test_a_joined_row_is_none_when_nothing_meets_it(db):
    reader = DetachedJoinReader(
        LaunchContext, Referral, Referral.visit_key == LaunchContext.visit_key, "id"
    )
    with db.read() as connection:
        context, referral = reader.one(connection, id="ctx-1")
        assert reader.one(connection, id="nope") == (None, None)
    assert context is not None and referral is None
    assert context.shown == CONTEXT["shown"] and inspect(context).detached
