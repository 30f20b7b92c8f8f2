"""The referral log: every step of a launch appends one event. The only place history is kept.

Events name the user, patient, encounter and time. The log is tamper-evident: each event is a
link of a SHA-256 hash chain (`smartapp.audit.chain`), checkpoints signed with Ed25519 every N
events, and `handoff audit verify` recomputes all of it. Events are Part 2 protected records:
nothing here updates or deletes them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from smartapp.audit import chain
from smartapp.audit.canonical import normalize_data
from smartapp.audit.models import LogCheckpoint, LogEvent

# Column limits (PostgreSQL enforces them; checking here fails early, before the caller's flush).
_LIMITS = {"type": 50, "user_ref": 500, "iss": 500, "patient_id": 200, "encounter_id": 200}


def append(
    session: Session,
    type_: str,
    *,
    user_ref: str | None = None,
    iss: str | None = None,
    patient_id: str | None = None,
    encounter_id: str | None = None,
    data: dict | None = None,
) -> LogEvent:
    """Add an event in the caller's unit of work (it commits with the change it records).

    Its sequence number, time and hashes are assigned when the session flushes (normally at
    commit), under the chain lock; until then `seq` and `hash` are None. Empty strings are
    stored as None; `data` must be JSON (it is stored exactly as hashed).
    """
    values = {
        "type": type_,
        "user_ref": user_ref or None,
        "iss": iss or None,
        "patient_id": patient_id or None,
        "encounter_id": encounter_id or None,
    }
    if not type_:
        raise ValueError("a log event needs a type")
    for name, value in values.items():
        if value is not None and len(value) > _LIMITS[name]:
            raise ValueError(f"log event {name} longer than {_LIMITS[name]} characters")
    entry = LogEvent(**values, data=normalize_data(data))
    chain.add(session, entry)
    return entry


def append_about(
    session: Session, type_: str, subject, data: dict | None = None, user_ref: str | None = None
) -> LogEvent:
    """`append` for an event about a launch or a referral (anything with `user_ref`, `iss`,
    `patient_id` and `encounter_id`); `user_ref` names someone else who acted (a coach)."""
    return append(
        session,
        type_,
        user_ref=user_ref or subject.user_ref,
        iss=subject.iss,
        patient_id=subject.patient_id,
        encounter_id=subject.encounter_id,
        data=data,
    )


def record_read(
    session: Session,
    auditor: str,
    query_description: str,
    *,
    patient_id: str | None = None,
) -> LogEvent:
    """Record that an auditor read the log (who, and what they asked for): reads of Part 2
    records are themselves audited. `patient_id` when the read was about one patient."""
    return append(
        session,
        "audit-read",
        user_ref=auditor,
        patient_id=patient_id,
        data={"query": query_description},
    )


def checkpoint(session: Session) -> LogCheckpoint | None:
    """Sign the chain head now (on demand) with the configured key; None if the log is empty."""
    return chain.checkpoint(session)


def events(session: Session, patient_id: str | None = None) -> list[LogEvent]:
    query = select(LogEvent).order_by(LogEvent.seq)
    if patient_id is not None:
        query = query.where(LogEvent.patient_id == patient_id)
    return list(session.scalars(query))
