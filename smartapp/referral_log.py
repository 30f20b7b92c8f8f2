"""The referral log: every step of a launch appends one event. The only place history is kept.

Events name the user, patient, encounter and time. Tamper-evidence (hash chain, signed
checkpoints) and the auditor's console build on this table.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from smartapp.db import LogEvent


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
    """Add an event in the caller's unit of work (it commits with the change it records)."""
    event = LogEvent(
        type=type_,
        user_ref=user_ref,
        iss=iss,
        patient_id=patient_id,
        encounter_id=encounter_id,
        data=data or {},
    )
    session.add(event)
    return event


def events(session: Session, patient_id: str | None = None) -> list[LogEvent]:
    query = select(LogEvent).order_by(LogEvent.id)
    if patient_id is not None:
        query = query.where(LogEvent.patient_id == patient_id)
    return list(session.scalars(query))
