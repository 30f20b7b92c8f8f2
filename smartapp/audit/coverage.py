"""Does the log cover what Handoff's own tables say happened? A cross-check for verify.

A hash chain shows that what is in the log was not changed; it cannot show that the whole log
is there. Handoff's tables can: every referral row was stored in the same transaction as its
`decision` event, every write attempt in the same transaction as its `write-attempt` event (and
the row's `attempts` count), every coach change with its `coach-*` event. So:

- each referral row has a `decision` event naming it, and each such event a referral row;
- a referral's `attempts` equals the number of its `write-attempt` events, and a written or
  failed referral's last attempt in the log has that outcome;
- a coach handoff's status is the `task_status` of its last `coach-*` event.

A log emptied or cut short while the referrals remain, or events forged for referrals that
never were, fails here even where no checkpoint is left to show it. Reads only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.models import LogEvent

KIND = "coverage"
TYPES = (
    "decision",
    "write-attempt",
    "coach-accept",
    "coach-contact",
    "coach-link",
    "coach-close",
    "handoff-reassign",  # issue 11: every change through handoffs.service.record logs task_status
    "handoff-status",
)


@dataclass(frozen=True)
class Finding:
    """One disagreement between the tables and the log; `seq` the event concerned, if any."""

    seq: int | None
    message: str


@dataclass
class _Logged:
    decisions: dict[str, int]  # referral -> seq of its first decision event
    attempts: Counter
    last_outcome: dict[str, str]
    coach_status: dict[str, str]


def _read_log(session: Session) -> _Logged:
    logged = _Logged({}, Counter(), {}, {})
    query = stored.select_events(LogEvent.type.in_(TYPES)).order_by(LogEvent.seq)
    for event in stored.read(session, query, 2000):
        data = event.data or {}
        referral = str(data.get("referral") or "")
        if event.broken or not referral:
            continue  # a damaged row is reported by the chain walk
        if event.type == "decision":
            logged.decisions.setdefault(referral, event.seq)
        elif event.type == "write-attempt":
            logged.attempts[referral] += 1
            logged.last_outcome[referral] = str(data.get("outcome"))
        else:
            logged.coach_status[referral] = str(data.get("task_status"))
    return logged


def check(session: Session) -> tuple[list[Finding], str | None]:
    """(findings, note): every disagreement, grouped by kind with a count and a first example;
    the note says when there are no referral tables to check against (a log-only copy)."""
    from smartapp.db import CoachHandoff, Referral

    tables = inspect(session.connection())
    if not tables.has_table(Referral.__tablename__):
        return [], "no referral table here: the log was not cross-checked against referrals"
    logged = _read_log(session)
    referrals = session.execute(
        select(Referral.id, Referral.status, Referral.attempts, Referral.created_at).order_by(
            Referral.created_at
        )
    ).all()
    miscounted = _miscounted(referrals, logged)
    found = [
        _missing_decisions(referrals, logged),
        _orphan_decisions(referrals, logged),
        _miscount_finding(miscounted, logged),
        _wrong_outcomes(referrals, miscounted, logged),
    ]
    if tables.has_table(CoachHandoff.__tablename__):
        handoffs = session.execute(select(CoachHandoff.referral_id, CoachHandoff.status)).all()
        found.append(_coach_mismatches(handoffs, logged))
    return [f for f in found if f is not None], None


def _missing_decisions(referrals: Sequence[Any], logged: _Logged) -> Finding | None:
    """Referral rows with no decision event naming them: their events were removed."""
    missing = [r for r in referrals if r.id not in logged.decisions]
    if not missing:
        return None
    first = missing[0]
    return Finding(
        None,
        f"{len(missing)} of {len(referrals)} referrals in the referral table have no "
        f"decision event in the log (the first: referral {first.id}, stored "
        f"{first.created_at:%Y-%m-%d %H:%M}): their events were removed",
    )


def _orphan_decisions(referrals: Sequence[Any], logged: _Logged) -> Finding | None:
    """Decision events naming a referral the table does not hold."""
    known = {r.id for r in referrals}
    orphans = sorted((seq, ref) for ref, seq in logged.decisions.items() if ref not in known)
    if not orphans:
        return None
    seq, ref = orphans[0]
    return Finding(
        seq,
        f"{len(orphans)} decision event(s) name a referral the referral table does not "
        f"hold (the first: event #{seq}, referral {ref}): inserted into the log, or the "
        "referral rows were deleted",
    )


def _miscounted(referrals: Sequence[Any], logged: _Logged) -> list[Any]:
    """Logged referrals whose `attempts` differs from their write-attempt events."""
    return [
        r for r in referrals if r.id in logged.decisions and r.attempts != logged.attempts[r.id]
    ]


def _miscount_finding(miscounted: Sequence[Any], logged: _Logged) -> Finding | None:
    if not miscounted:
        return None
    r = miscounted[0]
    return Finding(
        logged.decisions[r.id],
        f"{len(miscounted)} referral(s) record a different number of write attempts than "
        f"the log (the first: referral {r.id}, {r.attempts} in the table, "
        f"{logged.attempts[r.id]} write-attempt events): events removed or inserted",
    )


def _wrong_outcomes(
    referrals: Sequence[Any], miscounted: Sequence[Any], logged: _Logged
) -> Finding | None:
    """Written or failed referrals whose last write-attempt event says otherwise (those
    already miscounted aside)."""
    outcome = [
        r
        for r in referrals
        if r.status in ("written", "failed")
        and r.id in logged.decisions
        and r not in miscounted
        and logged.last_outcome.get(r.id) != r.status
    ]
    if not outcome:
        return None
    r = outcome[0]
    return Finding(
        logged.decisions[r.id],
        f"{len(outcome)} referral(s) have a status the log does not end with (the "
        f"first: referral {r.id} is {r.status}, its last write-attempt event says "
        f"{logged.last_outcome.get(r.id)})",
    )


def _coach_mismatches(handoffs: Sequence[Any], logged: _Logged) -> Finding | None:
    """Coach handoffs (past "requested") whose status no logged coach event leads to."""
    coach = [
        h
        for h in handoffs
        if h.status != "requested" and logged.coach_status.get(h.referral_id) != h.status
    ]
    if not coach:
        return None
    h = coach[0]
    return Finding(
        logged.decisions.get(h.referral_id),
        f"{len(coach)} coach handoff(s) have a status no coach event in the log "
        f"leads to (the first: referral {h.referral_id} is {h.status}, the log says "
        f"{logged.coach_status.get(h.referral_id) or 'nothing'})",
    )
