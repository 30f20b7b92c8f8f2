"""The outbox: a signed referral is stored before any write is tried, then delivered until it
lands. The only module that sends writes to an EHR.

- One row per visit (a unique key): a double click or a second Sign finds the first referral.
- A lease on the row: two workers, or a worker and the web app, never write it at once.
- Transient failures (timeout, connection refused or cut, 5xx, 429, an expired token) are retried
  with exponential backoff and full jitter, honouring Retry-After; permanent refusals (4xx with an
  OperationOutcome) are kept with the EHR's message for someone to act on.
- Duplicates are impossible: a transaction with conditional creates where the EHR has them;
  elsewhere a search by Handoff's identifier before every create.
"""

from __future__ import annotations

import copy
import logging
import random
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from smartapp.audit import log as referral_log
from smartapp.db import Database, Referral, utcnow
from smartapp.fhir.client import FhirClient, FhirError, _id_from_location
from smartapp.writeback.resources import transaction_bundle_from_operations

log = logging.getLogger("handoff.outbox")

LEASE = timedelta(seconds=90)
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 900.0
# After a create that got no answer in time, how long the EHR may still commit it: no second
# create of that resource before this has passed (config OUTBOX_CONFIRM_WAIT_SECONDS).
CONFIRM_WAIT_SECONDS = 120.0


class CredentialsUnavailable(Exception):
    """No live token for the referral's EHR (the launch ended); wait for a new launch."""


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
    plan: dict,
) -> tuple[Referral, bool]:
    """Store the signed referral; returns (row, created). An existing row for the visit wins."""
    status = "queued" if any(op["mode"] == "rest" for op in plan["operations"]) else "held"
    try:
        with db.session() as session:
            referral = Referral(
                id=secrets.token_hex(16),
                visit_key=visit_key,
                context_id=context_id,
                iss=iss,
                patient_id=patient_id,
                encounter_id=encounter_id,
                user_ref=user_ref,
                decision=decision,
                plan=plan,
                status=status,
                next_attempt_at=utcnow(),
            )
            session.add(referral)
            referral_log.append(
                session,
                "decision",
                user_ref=user_ref,
                iss=iss,
                patient_id=patient_id,
                encounter_id=encounter_id,
                data={
                    "referral": referral.id,
                    "profile": plan["profile"],
                    "kept_in_handoff": [
                        op["type"] for op in plan["operations"] if op["mode"] == "local"
                    ],
                    **decision,
                },
            )
        return referral, True
    except IntegrityError:
        existing = for_visit(db, visit_key)
        if existing is None:  # pragma: no cover - the unique key guarantees a row
            raise
        return existing, False


def for_visit(db: Database, visit_key: str) -> Referral | None:
    with db.session() as session:
        return session.scalar(select(Referral).where(Referral.visit_key == visit_key))


def get(db: Database, referral_id: str) -> Referral | None:
    with db.session() as session:
        return session.get(Referral, referral_id)


def hold(db: Database, referral_id: str, reason: str) -> Referral:
    """Keep a signed referral in Handoff only (the EHR cannot take it); visible, not retried."""
    with db.session() as session:
        referral = session.get(Referral, referral_id)
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


def claim(db: Database, referral_id: str, owner: str, now: datetime | None = None) -> bool:
    """Take the lease if nobody holds it (an atomic compare-and-set on the row)."""
    now = now or utcnow()
    with db.session() as session:
        result = session.execute(
            update(Referral)
            .where(
                Referral.id == referral_id,
                Referral.status == "queued",
                or_(Referral.lease_until.is_(None), Referral.lease_until < now),
            )
            .values(lease_owner=owner, lease_until=now + LEASE)
        )
        return result.rowcount == 1


def backoff_seconds(
    attempts: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter, capped; Retry-After wins when the EHR says so."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), BACKOFF_CAP_SECONDS)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return (rng or random).uniform(ceiling / 2, ceiling)


def deliver(
    db: Database,
    referral_id: str,
    client_for: Callable[[Referral], FhirClient],
    owner: str | None = None,
    confirm_wait: float | None = None,
) -> Referral | None:
    """One attempt at every pending write of the referral, under a lease. `confirm_wait`:
    seconds a create that got no answer in time may still land (CONFIRM_WAIT_SECONDS)."""
    owner = owner or secrets.token_hex(8)
    if not claim(db, referral_id, owner):
        return get(db, referral_id)  # somebody else is writing it, or it is done
    referral = get(db, referral_id)
    plan = copy.deepcopy(referral.plan)
    error: FhirError | None = None
    wait = timedelta(seconds=CONFIRM_WAIT_SECONDS if confirm_wait is None else confirm_wait)

    def write(client: FhirClient) -> None:
        if plan["transaction"]:
            _write_transaction(client, plan)
        else:
            _write_one_by_one(client, plan, wait)

    try:
        try:
            write(client_for(referral))
        except FhirError as exc:
            if exc.status != 401:
                raise
            # The token expired under us: refresh once, then go on where we stopped.
            write(client_for(referral, force_refresh=True))
    except FhirError as exc:
        error = exc
    except CredentialsUnavailable as exc:
        error = FhirError(str(exc), status=None, transient=True, retry_after=60)
    except Exception:  # a bug mid-write: what was sent may have landed; retried, read back first
        log.exception("write attempt crashed: referral=%s", referral_id[:8])
        error = FhirError(
            "Handoff hit an unexpected error while writing; it checks the chart and tries again.",
            transient=True,
            unknown_outcome=True,
        )
    return _record_attempt(db, referral_id, owner, plan, error)


def _write_transaction(client: FhirClient, plan: dict) -> None:
    """All REST writes in one transaction of conditional creates (all or nothing)."""
    pending = [
        op
        for op in plan["operations"]
        if op["mode"] == "rest" and op.get("method", "POST") == "POST"
    ]
    if not pending or all(op["status"] == "written" for op in pending):
        _write_updates(client, plan)
        return
    local = _local_references(plan)
    resolved = [op | {"resource": _resolve(op["resource"], {}, local)} for op in pending]
    response = client.post_bundle(transaction_bundle_from_operations(resolved))
    answers = response.get("entry", [])
    if len(answers) != len(pending):
        raise FhirError(
            "The EHR's transaction response does not match what was sent.", transient=True
        )
    for op, answer in zip(pending, answers, strict=True):
        reply = answer.get("response", {})
        resource = answer.get("resource") or {}
        op["id"] = resource.get("id") or _id_from_location(reply.get("location", ""), op["type"])
        op["http"] = reply.get("status", "")
    for op in pending:
        if not op["id"]:  # the answer does not say which resource: read it back
            op["id"], op["http"] = _read_back_id(client, op), "200 (found)"
        op["status"] = "written"
    _write_updates(client, plan)


def _read_back_id(client: FhirClient, op: dict) -> str:
    """The server id of a planned resource, found by Handoff's identifier (or _tag)."""
    found = client.find(op["type"], op["conditional"])
    if not found:
        raise FhirError(
            f"The EHR's answer did not say which {op['type']} it wrote, and it is not in the "
            "chart yet; Handoff checks again.",
            transient=True,
            unknown_outcome=True,
        )
    return found[0]["id"]


def _write_updates(client: FhirClient, plan: dict) -> None:
    """Updates of resources already at the EHR (the coach's Task changes), in order; PUT is
    idempotent, so a retry after a lost answer does no harm."""
    for op in plan["operations"]:
        if op.get("method") == "PUT" and op["mode"] == "rest" and op["status"] != "written":
            _write_update(client, plan, op)


def _write_update(client: FhirClient, plan: dict, op: dict) -> None:
    """PUT one update with its references to Handoff's resources as the EHR knows them
    (`ServiceRequest/<server id>`, never the plan's `urn:uuid:`), and keep what was sent."""
    op["resource"] = _resolve(op["resource"], _written_references(plan), _local_references(plan))
    result = client.update(op["resource"])
    op["http"], op["status"] = result["status"], "written"


def _written_references(plan: dict) -> dict[str, str]:
    """`urn:uuid:<key>` -> `Type/<server id>` for every resource the EHR already holds."""
    return {
        f"urn:uuid:{op['key']}": f"{op['type']}/{op['id']}"
        for op in plan["operations"]
        if op["mode"] == "rest"
        and op["status"] == "written"
        and op.get("id")
        and op.get("method", "POST") == "POST"
    }


def _write_one_by_one(client: FhirClient, plan: dict, confirm_wait: timedelta) -> None:
    """One create per resource, in plan order. Without conditional create, a search by
    Handoff's identifier first: the EHR may have committed an attempt whose answer was lost.
    A create that got no answer in time is not sent again until the search finds it or
    `confirm_wait` has passed (the EHR may still be committing it)."""
    local_refs = _local_references(plan)
    written_refs = _written_references(plan)
    for op in plan["operations"]:
        if op["mode"] != "rest" or op["status"] == "written":
            continue
        if op.get("method") == "PUT":
            _write_update(client, plan, op)
            continue
        resource = _resolve(copy.deepcopy(op["resource"]), written_refs, local_refs)
        if op["type"] == "Provenance":
            # A Provenance is about what the EHR holds: what stayed in Handoff is not a target.
            resource["target"] = [t for t in resource["target"] if "reference" in t]
        if plan["conditional_create"]:
            result = client.create(resource, if_none_exist=op["conditional"])
        else:
            found = client.find(op["type"], op["conditional"])
            if found:
                result = {"id": found[0]["id"], "status": "200 (found)"}
            else:
                _not_while_unconfirmed(op, confirm_wait)
                result = _create_once(client, resource, op)
        op.pop("unanswered_at", None)
        op["id"], op["http"], op["status"] = result["id"], result["status"], "written"
        written_refs[f"urn:uuid:{op['key']}"] = f"{op['type']}/{op['id']}"


def _create_once(client: FhirClient, resource: dict, op: dict) -> dict:
    """Create, remembering when a create got no answer in time (`unanswered_at`): the EHR may
    commit it later, so another create waits (see _not_while_unconfirmed)."""
    try:
        return client.create(resource)
    except FhirError as exc:
        if exc.in_flight:
            op["unanswered_at"] = utcnow().isoformat()
        raise


def _not_while_unconfirmed(op: dict, confirm_wait: timedelta) -> None:
    """Refuse a second create while an unanswered one may still land (searched for by
    Handoff's identifier just before, not found yet)."""
    unanswered = op.get("unanswered_at")
    if unanswered and utcnow() < datetime.fromisoformat(unanswered) + confirm_wait:
        raise FhirError(
            f"An earlier {op['type']} write got no answer in time and is not in the chart "
            "yet; Handoff checks again before writing it anew.",
            transient=True,
        )


def _local_references(plan: dict) -> dict[str, dict]:
    """Logical references (by identifier) to what stays in Handoff, for resources that point
    at it: the EHR cannot resolve a `urn:uuid:` it never received."""
    references = {}
    for op in plan["operations"]:
        if op["mode"] == "local":
            ident = (op["resource"].get("identifier") or [None])[0]
            display = {"display": f"{op['type']} kept in Handoff"}
            references[f"urn:uuid:{op['key']}"] = display | ({"identifier": ident} if ident else {})
    return references


def _resolve(value, written: dict[str, str], local: dict[str, dict]):
    """Swap `urn:uuid:` references for real ones (written) or logical ones (kept in Handoff)."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference.startswith("urn:uuid:"):
            if reference in written:
                return value | {"reference": written[reference]}
            if reference in local:
                return {k: v for k, v in value.items() if k != "reference"} | local[reference]
        return {k: _resolve(v, written, local) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, written, local) for v in value]
    return value


def _record_attempt(
    db: Database, referral_id: str, owner: str, plan: dict, error: FhirError | None
) -> Referral:
    now = utcnow()
    rest = [op for op in plan["operations"] if op["mode"] == "rest"]
    with db.session() as session:
        referral = session.get(Referral, referral_id)
        if referral.lease_owner != owner:  # lease lost (we were too slow): the other one records
            log.warning("lease lost: referral=%s", referral_id[:8])
            return referral
        referral.attempts += 1
        referral.plan = plan
        referral.lease_owner = None
        referral.lease_until = None
        referral.updated_at = now
        if error is None:
            referral.status = (
                "written" if all(op["status"] == "written" for op in rest) else "queued"
            )
            referral.last_error = None
        elif error.transient or error.status == 401:
            referral.status = "queued"
            referral.last_error = str(error)
            referral.next_attempt_at = now + timedelta(
                seconds=backoff_seconds(referral.attempts, error.retry_after)
            )
        else:
            referral.status = "failed"
            referral.last_error = str(error)
        log.info(
            "write attempt: referral=%s attempt=%d outcome=%s http=%s",
            referral_id[:8],
            referral.attempts,
            referral.status,
            getattr(error, "status", None),
        )
        referral_log.append_about(
            session,
            "write-attempt",
            referral,
            data={
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
    return get(db, referral_id)
