"""How long Handoff keeps launch contexts (PHI: patient and encounter ids, the user, the screen
as shown, encrypted tokens): LAUNCH_CONTEXT_RETENTION_DAYS, enforced by `handoff launch purge`.

A context that a queued write still needs (its own, or one of the same visit, whose token the
outbox may use) is kept until the write is done. Pending authorizations past their expiry go too.
The referral log is never purged: it is the record of what was shown, signed and written.
No Flask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import CursorResult, Delete, and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from smartapp.db import Database, LaunchContext, PendingAuthorization, Referral


@dataclass(frozen=True)
class Purged:
    contexts: int  # launch contexts deleted
    kept_for_outbox: int  # old enough, but a queued write still needs them
    authorizations: int  # expired pending authorizations deleted


def _needed_by_outbox():
    """A queued referral of this context, or of the same visit (its token may serve)."""
    return exists().where(
        Referral.status == "queued",
        or_(
            Referral.context_id == LaunchContext.id,
            and_(
                Referral.iss == LaunchContext.iss,
                Referral.patient_id == LaunchContext.patient_id,
                Referral.encounter_id.is_not_distinct_from(LaunchContext.encounter_id),
            ),
        ),
    )


def purge_launch_contexts(
    db: Database,
    older_than: timedelta,
    state_ttl: timedelta,
    now: datetime | None = None,
) -> Purged:
    """Delete launch contexts created more than `older_than` ago (except those the outbox
    needs) and pending authorizations older than `state_ttl`."""
    now = now or datetime.now(UTC)
    old = LaunchContext.created_at < now - older_than
    with db.session() as session:
        kept = session.scalar(
            select(func.count()).select_from(LaunchContext).where(old, _needed_by_outbox())
        )
        contexts = _deleted(
            session,
            delete(LaunchContext)
            .where(old, ~_needed_by_outbox())
            .execution_options(synchronize_session=False),
        )
        authorizations = _deleted(
            session,
            delete(PendingAuthorization).where(PendingAuthorization.created_at < now - state_ttl),
        )
    return Purged(contexts=contexts, kept_for_outbox=kept or 0, authorizations=authorizations)


def _deleted(session: Session, statement: Delete) -> int:
    """Run a DELETE; how many rows it deleted (a DELETE's result is a CursorResult)."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount
