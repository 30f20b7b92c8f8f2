"""Two amendments of one visit at the same moment on PostgreSQL (two windows, a double click
that reached two app processes): the row lock on the signed referral makes them run one after
the other, so the coach referral is revoked once and the second is told it is stale."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import SimpleNamespace

from sqlalchemy import select

from smartapp.aftercare import amend
from smartapp.audit.models import LogEvent
from smartapp.db import Database, LaunchContext
from smartapp.screen import service as screen
from smartapp.writeback import outbox, profiles
from smartapp.writeback.resources import plan_writes
from tests.app.test_lifecycle_queue_pg import pg_url  # noqa: F401  (the fixture)
from tests.unit.referrals import SETTINGS, referral

SHOWN = {
    "signer_name": "Avery Demo, MD",
    "suggestions": [{"kind": "prc-consult", "title": "Peer recovery coach consult"}],
}


def signed_visit(db: Database) -> LaunchContext:
    """A launch context and the referral signed for its visit (its writes landed)."""
    context = LaunchContext(
        id="ctx-pg",
        iss="http://ehr.test/fhir",
        patient_id="p1",
        encounter_id="e1",
        user_ref="Practitioner/doc",
        shown=SHOWN,
    )
    plan = plan_writes(referral(), SETTINGS, profiles.profile("fhir-rest"))
    for number, op in enumerate(plan.operations):
        op.mark_written(f"t-{number}", "201")
    outbox.submit(
        db,
        visit_key=screen.visit_key(context),
        context_id=context.id,
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        user_ref=context.user_ref,
        decision={"shown": SHOWN, "decisions": [{"kind": "prc-consult", "accepted": True}]},
        plan=plan,
    )
    return context


def test_two_revokes_at_once_revoke_once(pg_url):  # noqa: F811
    db = Database(pg_url)
    db.create_all()
    services = SimpleNamespace(db=db)
    context = signed_visit(db)
    before = amend.state(services, context)  # type: ignore[arg-type]
    assert before is not None and before.on
    form = amend.AmendForm("revoke", "changed-mind", based_on=before.version)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def revoke() -> None:
        start.wait()
        result = amend.amend(services, context, form, SETTINGS.identifier_system, datetime.now(UTC))  # type: ignore[arg-type]
        outcomes.append(result.outcome)

    threads = [threading.Thread(target=revoke) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["amended", "stale"]
    after = amend.state(services, context)  # type: ignore[arg-type]
    assert after is not None and not after.on
    with db.session() as session:
        types = session.scalars(select(LogEvent.type)).all()
    assert types.count("decision-amended") == 1
    assert types.count("handoff-status") == 1
    row = outbox.get(db, before.original.id)
    puts = [op["type"] for op in row.plan["operations"] if op.get("method") == "PUT"]
    assert puts.count("Task") == 1  # one Task update queued, not two
