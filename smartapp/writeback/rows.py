"""The outbox's own statements on a referral row, for the delivery's hot path: built once,
run as Core on the session's connection (no ORM unit of work or bulk-update machinery, a
visible part of each delivery's CPU; issue 15). A row read back comes out as a Referral that
belongs to no session, as the ORM's detached rows did; the outbox decides what is written."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, Update, bindparam, or_, select, update
from sqlalchemy.orm import Session

from smartapp.db import Referral

_REFERRALS = cast(Table, Referral.__table__)
_COLUMNS = _REFERRALS.c

# The lease taken where nobody holds it, and the row read under it, in one statement.
_CLAIM = (
    update(_REFERRALS)
    .where(
        _COLUMNS.id == bindparam("claim_id"),
        _COLUMNS.status == "queued",
        or_(_COLUMNS.lease_until.is_(None), _COLUMNS.lease_until < bindparam("claim_now")),
    )
    .values(lease_owner=bindparam("claim_owner"), lease_until=bindparam("claim_until"))
    .returning(*_COLUMNS)
)
# A row its owner stored with the lease taken (Sign delivers what it stored: no claim needed).
_LEASED = select(*_COLUMNS).where(
    _COLUMNS.id == bindparam("leased_id"),
    _COLUMNS.status == "queued",
    _COLUMNS.lease_owner == bindparam("leased_owner"),
)
_READ_LOCKED = select(*_COLUMNS).where(_COLUMNS.id == bindparam("read_id")).with_for_update()
# What an attempt's outcome writes (`next_attempt_at` too where it is retried later).
_RECORDED = ("attempts", "plan", "lease_owner", "lease_until", "updated_at", "status", "last_error")


def _record_statement(columns: tuple[str, ...]) -> Update:
    """The UPDATE of an attempt's outcome, `columns` bound as `record_<column>`."""
    return (
        update(_REFERRALS)
        .where(_COLUMNS.id == bindparam("record_id"))
        .values({column: bindparam(f"record_{column}") for column in columns})
    )


_RECORD = {
    False: _record_statement(_RECORDED),
    True: _record_statement((*_RECORDED, "next_attempt_at")),
}


def claim(
    session: Session, referral_id: str, owner: str, now: datetime, until: datetime
) -> Referral | None:
    """The queued row with its lease taken by `owner` until `until` (an atomic compare-and-set:
    UPDATE ... RETURNING, which SQLite and PostgreSQL both have); None where another lease
    is live or the referral is not queued."""
    row = session.execute(
        _CLAIM,
        {"claim_id": referral_id, "claim_now": now, "claim_owner": owner, "claim_until": until},
    ).first()
    return Referral(**row._asdict()) if row is not None else None


def leased(connection: Connection, referral_id: str, owner: str) -> Referral | None:
    """The queued row whose lease `owner` holds, as `claim` gives it (a read: the lease was
    taken when the row was stored); None where the row is not so."""
    row = connection.execute(_LEASED, {"leased_id": referral_id, "leased_owner": owner}).first()
    return Referral(**row._asdict()) if row is not None else None


def read_locked(session: Session, referral_id: str) -> dict[str, Any] | None:
    """The row's columns, locked for the rest of the transaction where the database locks
    rows (FOR UPDATE); None for an unknown referral."""
    row = session.execute(_READ_LOCKED, {"read_id": referral_id}).first()
    return row._asdict() if row is not None else None


def record(session: Session, referral_id: str, values: dict[str, Any]) -> None:
    """Write an attempt's outcome: every column of _RECORDED, and `next_attempt_at` if given."""
    statement = _RECORD["next_attempt_at" in values]
    session.execute(
        statement, {"record_id": referral_id} | {f"record_{k}": v for k, v in values.items()}
    )
