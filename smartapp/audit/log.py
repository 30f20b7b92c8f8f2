"""The referral log: every step of a launch appends one event. The only place history is kept.

Events name the user, patient, encounter and time. Users are named in one form whatever the
source (`user_reference`): a FHIR user as `Type/id` relative to the FHIR server it lives on (the
event's `iss`; where that is another server, its base is kept in the data as `user_base`), as
the SMART launch has always logged physicians; anyone else (`urn:staff:<sub>`) as given. Where an
identity is established (a launch, a staff sign-in) the display name is stored beside it, in the
data as `user_name` (hashed with the rest); `user_names` collects them for the console.
The log is tamper-evident: each event is a
link of a SHA-256 hash chain (`smartapp.audit.chain`), checkpoints signed with Ed25519 every N
events, and `handoff audit verify` recomputes all of it. Events are Part 2 protected records:
nothing here updates or deletes them.
"""

from __future__ import annotations

import re
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from smartapp.audit import chain, names
from smartapp.audit.canonical import normalize_data
from smartapp.audit.models import LogCheckpoint, LogEvent

# Column limits (PostgreSQL enforces them; checking here fails early, before the caller's flush).
_LIMITS = {"type": 50, "user_ref": 500, "iss": 500, "patient_id": 200, "encounter_id": 200}
# An absolute FHIR reference: the server's base, then `Type/id`.
_ABSOLUTE = re.compile(r"^(?P<base>https?://\S+?)/(?P<ref>[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})/?$")
# The events on which an identity is established, and so carry the user's display name.
NAMED_TYPES = ("launch", "staff-sign-in")


def user_reference(user_ref: str | None, iss: str | None = None) -> tuple[str | None, str | None]:
    """(the user in the log's one form, the FHIR base it is relative to when not `iss`).

    `https://ehr/fhir/Practitioner/7` and `Practitioner/7` both become `Practitioner/7`: the
    form the SMART launch logs (fhirUser relative to the EHR the user came from), the one FHIR
    resources written to that EHR use, and what an auditor types. The base is returned when it
    is not the event's `iss` (a staff sign-in names no EHR), so nothing is lost. Anything that
    is not an absolute FHIR reference (`urn:staff:ann`, an OS user) is kept as given.
    """
    text = (user_ref or "").strip()
    if not text:
        return None, None
    found = _ABSOLUTE.match(text)
    if not found:
        return text, None
    base = found.group("base").rstrip("/")
    same = iss is not None and base == iss.rstrip("/")
    return found.group("ref"), None if same else base


def append(
    session: Session,
    type_: str,
    *,
    user_ref: str | None = None,
    iss: str | None = None,
    patient_id: str | None = None,
    encounter_id: str | None = None,
    data: dict | None = None,
    user_name: str | None = None,
) -> LogEvent:
    """Add an event in the caller's unit of work (it commits with the change it records).

    Its sequence number, time and hashes are assigned when the session flushes (normally at
    commit), under the chain lock; until then `seq` and `hash` are None. Empty strings are
    stored as None; `data` must be JSON (it is stored exactly as hashed). The user is stored in
    the one form (`user_reference`); `user_name`, the user's display name, goes in the data.
    """
    user_ref, user_base = user_reference(user_ref, iss or None)
    data = normalize_data(data)  # a copy, refused if not a JSON object
    if user_base:
        data["user_base"] = user_base
    if user_name and user_name.strip():
        data["user_name"] = user_name.strip()[:200]
    values = {
        "type": type_,
        "user_ref": user_ref,
        "iss": iss or None,
        "patient_id": patient_id or None,
        "encounter_id": encounter_id or None,
    }
    if not type_:
        raise ValueError("a log event needs a type")
    for name, value in values.items():
        if value is not None and len(value) > _LIMITS[name]:
            raise ValueError(f"log event {name} longer than {_LIMITS[name]} characters")
    entry = LogEvent(**values, data=data)
    chain.add(session, entry)
    return entry


def append_about(
    session: Session,
    type_: str,
    subject,
    data: dict | None = None,
    user_ref: str | None = None,
    user_name: str | None = None,
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
        user_name=user_name,
    )


class Acting(Protocol):
    """Who acted on a referral (smartapp.writeback.actor.Actor): a kind, a display name and a
    reference (None for someone the EHR cannot resolve)."""

    @property
    def kind(self) -> str: ...
    @property
    def display(self) -> str: ...
    @property
    def reference(self) -> str | None: ...


def append_by(
    session: Session, type_: str, subject, actor: Acting, data: dict | None = None
) -> LogEvent:
    """`append_about` for an event someone named acted on: the event's user is the actor
    (`user_ref`, `user_name`) and its data says which kind of actor (`actor_kind`)."""
    return append_about(
        session,
        type_,
        subject,
        data=(data or {}) | {"actor_kind": actor.kind},
        user_ref=actor.reference,
        user_name=actor.display,
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


def user_names(session: Session) -> dict[str, str]:
    """Each user's display name, as last recorded where an identity was established (launches,
    staff sign-ins), by the user's reference. Damaged rows are skipped. Kept beside the log
    (`smartapp.audit.names`): only the events since the last call are read."""
    return names.user_names(session)


def checkpoint(session: Session) -> LogCheckpoint | None:
    """Sign the chain head now (on demand) with the configured key; None if the log is empty."""
    return chain.checkpoint(session)


def events(session: Session, patient_id: str | None = None) -> list[LogEvent]:
    query = select(LogEvent).order_by(LogEvent.seq)
    if patient_id is not None:
        query = query.where(LogEvent.patient_id == patient_id)
    return list(session.scalars(query))
