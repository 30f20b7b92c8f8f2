"""Changes to one handoff queued at the same moment by different people (a coach on the
worklist, a partner's API call, a supervisor) on PostgreSQL: each is kept, in the order they
committed. `enqueue_task_update` locks the referral's row (SELECT ... FOR UPDATE) before it
reads the plan, so no change is lost to another's read-modify-write of the row."""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from smartapp.db import Database
from smartapp.writeback import outbox, profiles
from smartapp.writeback.actor import Actor
from smartapp.writeback.plan import Method, Mode
from smartapp.writeback.resources import plan_writes
from smartapp.writeback.task_update import TaskChanges
from tests.unit.referrals import SETTINGS, referral


@pytest.fixture
def pg_url():
    base = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("HANDOFF_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    schema = f"lc_{secrets.token_hex(4)}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def written_referral(db: Database) -> str:
    """A referral whose first writes landed (the Task is at the EHR as Task/t-1)."""
    plan = plan_writes(referral(), SETTINGS, profiles.profile("fhir-rest"))
    for number, op in enumerate(plan.operations):
        op.mark_written(f"t-{number}", "201")
    row, _ = outbox.submit(
        db,
        visit_key="v-pg",
        context_id="c",
        iss="http://ehr.test/fhir",
        patient_id="p1",
        encounter_id="e1",
        user_ref="Practitioner/doc",
        decision={"decisions": [{"kind": "prc-consult", "accepted": True}]},
        plan=plan,
    )
    return row.id


def test_changes_queued_at_once_are_all_kept_in_commit_order(pg_url):
    db = Database(pg_url)
    db.create_all()
    referral_id = written_referral(db)
    start = threading.Barrier(4)
    committed: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def queue(number: int) -> None:
        actor = Actor("coach", f"Coach {number}", f"urn:staff:coach-{number}")
        changes = TaskChanges(
            "in-progress",
            datetime(2026, 11, 20, 16, tzinfo=UTC) + timedelta(minutes=number),
            actor=actor,
            note=f"attempt {number}",
        )
        try:
            start.wait(10)
            with db.session() as session:
                assert outbox.enqueue_task_update(session, referral_id, changes)
                time.sleep(0.3)  # the others read the row meanwhile, were it not locked
                with lock:
                    committed.append(actor.display)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=queue, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    plan = outbox.plan_of(outbox.get(db, referral_id))
    updates = [op for op in plan.operations if op.method is Method.UPDATE]
    assert len(updates) == 4 and all(op.mode is Mode.REST for op in updates)
    queued_by = [op.changes["actor"]["display"] for op in updates]
    assert queued_by == committed  # each kept, in the order they committed
    provenances = [op for op in plan.operations if op.about]
    assert [p.about for p in provenances] == [[u.key] for u in updates]
    assert len({op.key for op in plan.operations}) == len(plan.operations)
