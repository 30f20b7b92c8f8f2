"""The referrals that may still ask something of the coach team, read without reading every
referral Handoff ever kept (the worklist, the team queue and the supervisor's follow-ups):

- signed since the horizon (the last outcome day plus HORIZON_DAYS: a follow-up or an
  outcome may still be due, and a handoff signed minutes ago has no plan yet);
- an open handoff, whatever its age: a coach row with an open status, or no coach row yet on
  a handoff whose follow-up was planned (requested, untouched by any coach).

A referral older than the horizon that is neither is closed, or no handoff (the coach consult
declined): nothing of the coach team's is due on it, and it is read only when asked for
("Show closed"). Three reads along indexes, not one per referral: a health system keeps
hundreds of thousands of referrals, each with its decision and write plan as JSON, and the
pages that read them all took seconds at 20,000.

A handoff is planned the first time one of these pages sees it signed (`followup.ensure_plans`,
within the horizon), and `handoff db upgrade` plans every one a release before this missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from smartapp.db import CoachHandoff, FollowupContact, Referral
from smartapp.handoffs import followup
from smartapp.handoffs.lifecycle import OPEN

#: A closed handoff is read this many days after its last outcome day (an outcome recorded
#: late still has a window; "Show closed" lists every one).
HORIZON_DAYS = 30


def horizon(now: datetime, settings: followup.FollowupSettings) -> datetime:
    """The oldest signing time whose referral is read whatever its state."""
    return now - timedelta(days=max(settings.outcome_days, default=0) + HORIZON_DAYS)


def referral_ids(session: Session, since: datetime) -> set[str]:
    """The ids of the referrals signed since `since`, and of the open handoffs of any age."""
    recent = select(Referral.id).where(Referral.created_at >= since.astimezone(UTC))
    open_rows = select(CoachHandoff.referral_id).where(CoachHandoff.status.in_(OPEN))
    touched = exists().where(CoachHandoff.referral_id == FollowupContact.referral_id)
    untouched = select(FollowupContact.referral_id).where(~touched).distinct()
    found: set[str] = set()
    for query in (recent, open_rows, untouched):
        found.update(session.scalars(query))
    return found


def referrals(session: Session, since: datetime) -> list[Referral]:
    """Those referrals (`referral_ids`), oldest first, read in batches of ids."""
    return by_ids(session, referral_ids(session, since))


def handoffs_signed(session: Session, since: datetime) -> dict[str, datetime]:
    """Referral id -> signing time of those referrals (`referral_ids`) that are handoffs: the
    decisions picked out by the database, not whole decisions and write plans read."""
    found: dict[str, datetime] = {}
    for batch in followup.in_batches(sorted(referral_ids(session, since))):
        rows = session.execute(followup.SIGNINGS.where(Referral.id.in_(batch)))
        found.update(followup.handoffs_among(rows))
    return found


def by_ids(session: Session, ids: Iterable[str]) -> list[Referral]:
    """The referrals with these ids, oldest signed first."""
    found: list[Referral] = []
    for batch in followup.in_batches(sorted(ids)):
        found.extend(session.scalars(select(Referral).where(Referral.id.in_(batch))))
    return sorted(found, key=lambda r: (r.created_at, r.id))
