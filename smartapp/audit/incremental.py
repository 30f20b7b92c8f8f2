"""Verifying the referral log incrementally: from where the last verification stopped (issue 15).

A full verification reads every event (seconds at a million). The console's pages cannot, so
`verify_since_last` checks only the events after the head the last passing verification
reached (`log_verification`: its seq, hash and last checkpoint), from that hash on, and the
checkpoints signed since. That is sound only while the verified part is unchanged, and Handoff
never updates or deletes a log row, so:

- database triggers (migration 0006) write a `log_tamper_mark` for every UPDATE or DELETE of a
  `log_event` or `log_checkpoint` row: a mark newer than the last verification, a trigger that
  is gone, or the event at the verified seq no longer having the verified hash sends this
  check back over the whole log;
- the whole log is verified on demand (the console's button) and on a schedule
  (`handoff audit verify --record`), and the page shows when that last happened and what it
  found.

What this cannot see until the next full verification: a change made with the triggers
dropped and restored in between, by someone who can alter the schema. The full verification
and the signed checkpoints kept off the box (`kept`) remain the proof.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from smartapp.audit.findings import Report
from smartapp.audit.kept import KeptCheckpoint
from smartapp.audit.models import LogEvent, LogTamperMark, LogVerification
from smartapp.audit.verify import verify
from smartapp.db import utcnow

STATE_ID = 1
# The triggers migration 0006 creates, by dialect.
TRIGGERS = {
    "sqlite": (
        "log_event_update_mark",
        "log_event_delete_mark",
        "log_checkpoint_update_mark",
        "log_checkpoint_delete_mark",
    ),
    "postgresql": ("log_event_change_mark", "log_checkpoint_change_mark"),
}


@dataclass
class Verified:
    """A verification as the console shows it: the report, from which seq it checked, and the
    last full verification (when, through which event, whether it passed, its summary)."""

    report: Report
    checked_from: int  # 1 for a full verification
    reason: str | None  # why a full verification was run where an incremental one was asked
    full_at: datetime | None
    full_seq: int | None
    full_ok: bool | None
    full_summary: str | None


def missing_triggers(session: Session) -> list[str]:
    """The tamper-mark triggers that are not in the database (all of them for an unknown
    dialect)."""
    connection = session.connection()
    wanted = TRIGGERS.get(connection.dialect.name, ("?",))
    if connection.dialect.name == "sqlite":
        found = connection.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ).scalars()
    elif connection.dialect.name == "postgresql":
        found = connection.execute(
            text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        ).scalars()
    else:
        return list(wanted)
    present = set(found)
    return [name for name in wanted if name not in present]


def _last_mark(session: Session) -> int:
    return int(session.scalar(select(func.max(LogTamperMark.id))) or 0)


def _state(session: Session) -> LogVerification | None:
    return session.get(LogVerification, STATE_ID)


def _why_full(session: Session, state: LogVerification | None, mark: int) -> str | None:
    """Why the whole log must be verified now; None when checking from the last head is sound."""
    if state is None or state.seq == 0:
        return "no earlier verification"
    missing = missing_triggers(session)
    if missing:
        return "the log's change triggers are missing (" + ", ".join(missing) + ")"
    if mark > state.mark:
        return "rows of the log were changed or deleted since the last verification"
    if state.full_ok is False:
        return "the last full verification found the log broken"
    anchor = session.scalar(select(LogEvent.hash).where(LogEvent.seq == state.seq))
    if anchor != state.hash:
        return f"event #{state.seq} no longer has the hash it was verified with"
    return None


def verify_since_last(
    session: Session,
    public_keys: Sequence[Ed25519PublicKey],
    max_unsigned: int | None,
    kept: Sequence[KeptCheckpoint] = (),
) -> Verified:
    """Verify what follows the last verified head; the whole log where that is not sound
    (`_why_full`). A passing check moves the verified head forward (in the caller's unit of
    work)."""
    mark = _last_mark(session)
    state = _state(session)
    reason = _why_full(session, state, mark)
    if reason is not None:
        return verify_everything(session, public_keys, max_unsigned, kept, reason=reason)
    assert state is not None
    since = (int(state.seq), state.hash, int(state.checkpoint))
    report = verify(session, public_keys, max_unsigned, kept, since=since)
    if report.ok:
        _record(session, report, mark, full=False)
    return _verified(session, report, since[0] + 1, None)


def verify_everything(
    session: Session,
    public_keys: Sequence[Ed25519PublicKey],
    max_unsigned: int | None,
    kept: Sequence[KeptCheckpoint] = (),
    *,
    reason: str | None = None,
    cross_check: bool = False,
) -> Verified:
    """Verify the whole log and record it (when, through which event, what it found)."""
    mark = _last_mark(session)
    report = verify(session, public_keys, max_unsigned, kept, cross_check=cross_check)
    _record(session, report, mark, full=True)
    return _verified(session, report, 1, reason)


def _record(session: Session, report: Report, mark: int, *, full: bool) -> None:
    """Remember how far the log verified (only a passing check moves the head) and, for a full
    verification, when and with what result."""
    state = _state(session)
    now = utcnow()
    if state is None:
        state = LogVerification(id=STATE_ID, seq=0, hash="", checkpoint=0, mark=0, verified_at=now)
        session.add(state)
    if report.ok:
        state.seq, state.hash = report.head_seq, report.head_hash
        state.checkpoint, state.mark, state.verified_at = report.last_checkpoint, mark, now
    elif full:
        state.seq, state.hash, state.checkpoint = 0, "", 0
    if full:
        state.full_at, state.full_seq = now, report.head_seq
        state.full_ok, state.full_summary = report.ok, report.summary()[:2000]
    session.flush()


def _verified(session: Session, report: Report, checked_from: int, reason: str | None) -> Verified:
    state = _state(session)
    return Verified(
        report=report,
        checked_from=checked_from,
        reason=reason,
        full_at=state.full_at if state else None,
        full_seq=state.full_seq if state else None,
        full_ok=state.full_ok if state else None,
        full_summary=state.full_summary if state else None,
    )
