"""The outbox's figures for the metrics: how many referrals wait with queued writes, and how
long the oldest has waited (one aggregate query, no rows loaded)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from smartapp.db import Database, Referral, stored_utc


def queue_figures(db: Database, now: datetime | None = None) -> tuple[int, float]:
    """(queued referrals, seconds since the oldest was signed; 0 when none)."""
    with db.read() as connection:
        count, oldest = connection.execute(
            select(func.count(), func.min(Referral.created_at)).where(Referral.status == "queued")
        ).one()
    if not count or oldest is None:
        return 0, 0.0
    age = (now or datetime.now(UTC)) - stored_utc(oldest)
    return int(count), max(0.0, age.total_seconds())
