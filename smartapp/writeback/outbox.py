"""The outbox: a signed referral is stored before any write is tried, then delivered until it
lands. Only the outbox sends writes to an EHR (`deliver`, with the ways of writing in
`writers`); others ask it: `submit` a signed referral, `enqueue_task_update` a coach's change.

- One row per visit (a unique key): a double click or a second Sign finds the first referral.
- A lease on the row: two workers, or a worker and the web app, never write it at once.
- Transient failures (timeout, connection refused or cut, 5xx, 429, an expired token) are retried
  with exponential backoff and full jitter, honouring Retry-After; permanent refusals (4xx with an
  OperationOutcome) are kept with the EHR's message for someone to act on.
- Duplicates are impossible: a transaction with conditional creates where the EHR has them;
  elsewhere a search by Handoff's identifier before every create.
- The plan (`plan.WritePlan`) is read from and written to the row here only (`plan_of`,
  `store_plan`).
"""

from __future__ import annotations

import logging
import random
import secrets
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smartapp.audit import log as referral_log
from smartapp.db import Database, Referral, stored_utc, utcnow
from smartapp.detached import DetachedReader
from smartapp.fhir.client import FhirClient, FhirError
from smartapp.writeback import rows, writers
from smartapp.writeback.actor import Actor
from smartapp.writeback.plan import (
    Delivery,
    Mode,
    Status,
    WritePlan,
    as_plan,
    resolve_references,
)
from smartapp.writeback.task_update import TaskChanges, apply_task_changes

log = logging.getLogger("handoff.outbox")

LEASE = timedelta(seconds=90)
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 900.0
# After a create that got no answer in time, how long the EHR may still commit it: no second
# create of that resource before this has passed (config OUTBOX_CONFIRM_WAIT_SECONDS).
CONFIRM_WAIT_SECONDS = 120.0


class CredentialsUnavailable(Exception):
    """No live token for the referral's EHR (the launch ended); wait for a new launch."""


class ClientFor(Protocol):
    """A FHIR client with the referral's credentials; `force_refresh` after a 401."""

    def __call__(self, referral: Referral, force_refresh: bool = False) -> FhirClient: ...


# -- the plan on the row: the only place it is read from and written to the JSON column -----


def plan_of(referral: Referral) -> WritePlan:
    """The referral's plan (a copy: editing it changes the row only through store_plan)."""
    return WritePlan.from_json(referral.plan)


def store_plan(referral: Referral, plan: WritePlan) -> None:
    referral.plan = plan.to_json()


def _row(session: Session, referral_id: str) -> Referral:
    referral = session.get(Referral, referral_id)
    if referral is None:
        raise LookupError(f"No referral {referral_id[:8]}.")
    return referral


def _loggable(decision: dict) -> dict:
    """The decision as the permanent log keeps it: without the patient's phone and bed
    (`shown.contact`), which the coach needs on the referral row but an append-only log
    must not hold for ever (least data at rest)."""
    shown = decision.get("shown")
    if not isinstance(shown, dict) or "contact" not in shown:
        return decision
    return decision | {"shown": {k: v for k, v in shown.items() if k != "contact"}}


# -- the queue ---------------------------------------------------------------------------


def submit(
    db: Database,
    *,
    visit_key: str,
    context_id: str,
    iss: str,
    patient_id: str,
    encounter_id: str | None,
    user_ref: str | None,
    decision: dict,
    plan: WritePlan | dict[str, Any],
    lease_for: str | None = None,
) -> tuple[Referral, bool]:
    """Store the signed referral; returns (row, created). An existing row for the visit wins.
    `plan` is typed or its stored form (both are checked by parsing). `lease_for`: the owner
    that delivers the row at once (`deliver(..., leased=True)`): a queued row is stored with
    its lease taken, in the same transaction, instead of claimed by a second one."""
    try:
        with db.session() as session:
            referral = submit_in(
                session,
                visit_key=visit_key,
                context_id=context_id,
                iss=iss,
                patient_id=patient_id,
                encounter_id=encounter_id,
                user_ref=user_ref,
                decision=decision,
                plan=plan,
                lease_for=lease_for,
            )
        return referral, True
    except IntegrityError:
        existing = for_visit(db, visit_key)
        if existing is None:  # pragma: no cover - the unique key guarantees a row
            raise
        return existing, False


def submit_in(
    session: Session,
    *,
    visit_key: str,
    context_id: str,
    iss: str,
    patient_id: str,
    encounter_id: str | None,
    user_ref: str | None,
    decision: dict,
    plan: WritePlan | dict[str, Any],
    lease_for: str | None = None,
) -> Referral:
    """`submit` in the caller's unit of work (an amendment after Sign stores its new referral
    together with the amendment's log event): the row and its `decision` event, flushed (an
    IntegrityError for a visit key stored already)."""
    typed = as_plan(plan)
    now = utcnow()
    queued = typed.has_rest_writes
    referral = Referral(
        id=secrets.token_hex(16),
        visit_key=visit_key,
        context_id=context_id,
        iss=iss,
        patient_id=patient_id,
        encounter_id=encounter_id,
        user_ref=user_ref,
        decision=decision,
        status="queued" if queued else "held",
        next_attempt_at=now,
    )
    if lease_for is not None and queued:
        referral.lease_owner = lease_for
        referral.lease_until = now + LEASE
    store_plan(referral, typed)
    session.add(referral)
    session.flush()
    referral_log.append(
        session,
        "decision",
        user_ref=user_ref,
        iss=iss,
        patient_id=patient_id,
        encounter_id=encounter_id,
        data={
            "referral": referral.id,
            "profile": typed.profile,
            "kept_in_handoff": [op.type for op in typed.kept],
            **_loggable(decision),
        },
    )
    return referral


def for_visit(db: Database, visit_key: str) -> Referral | None:
    with db.session() as session:
        return visit_referral(session, visit_key)


_VISIT_REFERRAL = select(Referral).where(Referral.visit_key == bindparam("visit_key"))
#: Built once: every screen, Sign and signed page asks it.
_VISIT_REFERRAL_READ = DetachedReader(Referral, "visit_key")


def visit_referral(session: Session, visit_key: str) -> Referral | None:
    """The referral signed for a visit, in the caller's unit of work."""
    return session.scalar(_VISIT_REFERRAL, {"visit_key": visit_key})


def visit_referral_read(connection: Connection, visit_key: str) -> Referral | None:
    """The referral signed for a visit, read on `connection`: a detached instance, read
    for about half the CPU of a session's (`DetachedReader`)."""
    return _VISIT_REFERRAL_READ.one(connection, visit_key=visit_key)


def get(db: Database, referral_id: str) -> Referral | None:
    with db.session() as session:
        return session.get(Referral, referral_id)


def hold(db: Database, referral_id: str, reason: str) -> Referral:
    """Keep a signed referral in Handoff only (the EHR cannot take it); visible, not retried."""
    with db.session() as session:
        referral = _row(session, referral_id)
        referral.status = "held"
        referral.last_error = reason
        referral.updated_at = utcnow()
        referral_log.append_about(
            session,
            "write-held",
            referral,
            data={"referral": referral.id, "reason": reason},
        )
    return referral


def enqueue_task_update(session: Session, referral_id: str, changes: TaskChanges) -> bool:
    """Queue a change to the referral's Task, in the caller's transaction (so the handoff's
    state, its log entry and the queued write commit together). Where the EHR holds the Task,
    a versioned PUT is queued (with the ServiceRequest's where the Task closes, and a
    Provenance naming `changes.actor`), after every change queued before it, and the referral
    goes back to the queue (True); else the copies kept in Handoff change (False). The row is
    locked (FOR UPDATE where the database has it) so two changes never lose one another."""
    referral = session.get(Referral, referral_id, with_for_update=True)
    if referral is None:
        raise LookupError(f"No referral {referral_id[:8]}.")
    plan = plan_of(referral)
    if plan.task_create() is None:
        return False
    queued = apply_task_changes(plan, changes)
    if queued:
        referral.status = "queued"
        referral.next_attempt_at = utcnow()
    store_plan(referral, plan)
    return queued


def due(db: Database, now: datetime | None = None, limit: int = 20) -> list[str]:
    """Queued referrals whose next attempt is due and that nobody holds a lease on."""
    now = now or utcnow()
    with db.session() as session:
        query = (
            select(Referral.id)
            .where(
                Referral.status == "queued",
                Referral.next_attempt_at <= now,
                or_(Referral.lease_until.is_(None), Referral.lease_until < now),
            )
            .order_by(Referral.next_attempt_at)
            .limit(limit)
        )
        return list(session.scalars(query))


def new_lease_owner() -> str:
    """A name for one delivery's lease."""
    return secrets.token_hex(8)


def claimed(
    db: Database, referral_id: str, owner: str, now: datetime | None = None
) -> Referral | None:
    """Take the lease if nobody holds it (an atomic compare-and-set on the row) and read the
    row under it, in one statement (UPDATE ... RETURNING: SQLite and PostgreSQL both have it);
    None when somebody else holds it or it is done."""
    now = now or utcnow()
    with db.session() as session:
        return rows.claim(session, referral_id, owner, now, now + LEASE)


def backoff_seconds(
    attempts: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter, capped; Retry-After wins when the EHR says so."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), BACKOFF_CAP_SECONDS)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return (rng or random).uniform(ceiling / 2, ceiling)


# -- one delivery attempt ------------------------------------------------------------------


def deliver(
    db: Database,
    referral_id: str,
    client_for: ClientFor,
    owner: str | None = None,
    confirm_wait: float | None = None,
    leased: bool = False,
    stored: Referral | None = None,
) -> Referral | None:
    """One attempt at every pending write of the referral, under a lease. `confirm_wait`:
    seconds a create that got no answer in time may still land (CONFIRM_WAIT_SECONDS).
    `leased`: `owner` took the lease when it stored the row (`submit(..., lease_for=owner)`),
    so the row is read, not claimed (no write transaction of its own). `stored`: that row
    as `submit` gave it, handed over (the caller uses it no more): taken as it is while its
    lease is live, which no other owner can claim, instead of read again."""
    if leased and owner is None:
        raise ValueError("a leased delivery names the lease's owner")
    owner = owner or new_lease_owner()
    if leased and stored is not None and _holds_live_lease(stored, referral_id, owner):
        referral: Referral | None = stored
    elif leased:
        with db.read() as connection:
            referral = rows.leased(connection, referral_id, owner)
    else:
        referral = claimed(db, referral_id, owner)
    if referral is None:
        return get(db, referral_id)  # somebody else is writing it, or it is done
    # The claimed row belongs to no session and is dropped after this attempt: its plan is
    # read without a copy (the attempt's edits reach the row only through _record_attempt).
    plan = WritePlan.from_json(referral.plan, copy=False)
    wait = timedelta(seconds=CONFIRM_WAIT_SECONDS if confirm_wait is None else confirm_wait)
    actors = _pending_actors(plan)
    error = _attempt(plan, referral, client_for, wait)
    return _record_attempt(db, referral_id, owner, plan, error, actors)


def _holds_live_lease(stored: Referral, referral_id: str, owner: str) -> bool:
    """Whether `stored` is the queued row `referral_id` whose lease `owner` holds, live now
    (a lease runs out only after LEASE: until then no one else can claim the row)."""
    until = stored.lease_until
    return (
        stored.id == referral_id
        and stored.status == "queued"
        and stored.lease_owner == owner
        and until is not None
        and stored_utc(until) > utcnow()
    )


def _pending_actors(plan: WritePlan) -> list[Actor]:
    """Who made the changes this attempt sends (each once, in order)."""
    actors: list[Actor] = []
    for op in plan.follow_ups():
        data = (op.changes or {}).get("actor")
        if op.mode == Mode.REST and op.status != Status.WRITTEN and data:
            actor = Actor.from_json(data)
            if actor not in actors:
                actors.append(actor)
    return actors


def _attempt(
    plan: WritePlan, referral: Referral, client_for: ClientFor, wait: timedelta
) -> FhirError | None:
    """Send the plan's pending writes (editing `plan` as they land); the error that stopped
    them, if any. A 401 refreshes the token once and goes on where it stopped."""

    def write(client: FhirClient) -> None:
        if plan.delivery is Delivery.TRANSACTION:
            writers.write_transaction(client, plan)
        else:
            writers.write_one_by_one(client, plan, wait)

    try:
        try:
            write(client_for(referral))
        except FhirError as exc:
            if exc.status != 401:
                raise
            write(client_for(referral, force_refresh=True))
    except FhirError as exc:
        return exc
    except CredentialsUnavailable as exc:
        return FhirError(str(exc), status=None, transient=True, retry_after=60)
    except Exception:  # a bug mid-write: what was sent may have landed; retried, read back first
        log.exception("write attempt crashed: referral=%s", referral.id[:8])
        return FhirError(
            "Handoff hit an unexpected error while writing; it checks the chart and tries again.",
            transient=True,
            unknown_outcome=True,
        )
    return None


def _local_references(plan: WritePlan | dict[str, Any]) -> dict[str, dict]:
    """Logical references to what stays in Handoff (see WritePlan.local_references)."""
    return as_plan(plan).local_references()


# The reference rewriting lives with the plan; this name is kept for existing callers.
_resolve = resolve_references


def _record_attempt(
    db: Database,
    referral_id: str,
    owner: str,
    plan: WritePlan,
    error: FhirError | None,
    actors: list[Actor] | None = None,
) -> Referral:
    now = utcnow()
    with db.session() as session:
        stored = rows.read_locked(session, referral_id)
        if stored is None:  # pragma: no cover - referrals are never deleted
            raise LookupError(f"No referral {referral_id[:8]}.")
        if stored["lease_owner"] != owner:  # lease lost (too slow): the other one records
            log.warning("lease lost: referral=%s", referral_id[:8])
            return Referral(**stored)
        # The stored plan read as it is (no copy): its operations move into `plan`, which
        # replaces it on the row.
        _merge_changes_made_meanwhile(plan, WritePlan.from_json(stored["plan"], copy=False))
        attempts = stored["attempts"] + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "plan": plan.to_json(),
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
        }
        if error is None:
            values["status"] = "written" if plan.all_rest_written else "queued"
            values["last_error"] = None
        elif error.transient or error.status == 401:
            values["status"] = "queued"
            values["last_error"] = str(error)
            values["next_attempt_at"] = now + timedelta(
                seconds=backoff_seconds(attempts, error.retry_after)
            )
        else:
            values["status"] = "failed"
            values["last_error"] = str(error)
        rows.record(session, referral_id, values)
        referral = Referral(**(stored | values))
        _log_attempt(session, referral, error, actors or [])
    return referral  # as recorded


def _merge_changes_made_meanwhile(delivered: WritePlan, stored: WritePlan) -> None:
    """Keep what the worklist queued while this attempt was writing: updates appended to
    the stored plan since the attempt read it, and the copies kept in Handoff (which a
    delivery never changes, a coach may). Without this the attempt's copy would drop them."""
    known = {op.key for op in delivered.operations}
    kept = {op.key: op for op in stored.kept}
    for index, op in enumerate(delivered.operations):
        if op.mode == Mode.LOCAL and op.key in kept:
            delivered.operations[index] = kept[op.key]
    delivered.operations += [op for op in stored.operations if op.key not in known]


def _log_attempt(
    session: Session, referral: Referral, error: FhirError | None, actors: list[Actor]
) -> None:
    """The attempt in the referral log; where it sent changes, it names who made them (the
    last one as the event's user: `user_ref`, `user_name`, `actor_kind`; all in `actors`)."""
    log.info(
        "write attempt: referral=%s attempt=%d outcome=%s http=%s actor=%s",
        referral.id[:8],
        referral.attempts,
        referral.status,
        getattr(error, "status", None),
        actors[-1].kind if actors else None,
    )
    actor = actors[-1] if actors else None
    named = (
        {
            "actor_kind": actor.kind,
            "actors": [a.to_json() for a in actors],
        }
        if actor
        else {}
    )
    referral_log.append_about(
        session,
        "write-attempt",
        referral,
        user_ref=actor.reference if actor else None,
        user_name=actor.display if actor else None,
        data=named
        | {
            "referral": referral.id,
            "attempt": referral.attempts,
            "outcome": referral.status,
            "error": referral.last_error,
            "http_status": getattr(error, "status", None),
            "written": referral.written,
            "next_attempt_at": referral.next_attempt_at.isoformat()
            if referral.status == "queued"
            else None,
        },
    )
