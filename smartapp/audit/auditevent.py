"""A referral log event as a FHIR R4 AuditEvent following IHE BALP (the NDJSON export).

Each log event becomes one AuditEvent. Patterns follow IHE Basic Audit Log Patterns (BALP):
writes to the EHR use the Create pattern, things shown to a user the Read pattern. The profiles
are followed, not claimed in `meta.profile`: Handoff does not record the network addresses
BALP requires of client and server, and failed writes are outside the (success-only) profiles.

Mapping (DCM = DICOM codes; user types from v3-ParticipationType unless noted; "app"/"EHR" are
the agent types of Handoff and of the EHR named by `iss`):

| Handoff event     | type / subtype                     | action | outcome              |
|-------------------|------------------------------------|--------|----------------------|
| launch            | DCM 110114 User Authentication /   | E      | 0                    |
|                   | DCM 110122 Login                   |        |                      |
| suggestions-shown | rest / read (BALP PatientRead)     | R      | 0                    |
| decision          | DCM 110110 Patient Record          | C      | 0                    |
| write-attempt     | rest / create + transaction        | C      | written 0, queued 4  |
|                   | (BALP PatientCreate)               |        | (retried), failed 8  |
| write-held        | rest / create + transaction        | C      | 8 (never sent)       |
| audit-read        | rest / read (BALP Read)            | R      | 0                    |
| audit-export      | DCM 110106 Export                  | R      | 0                    |
| anything else     | urn:handoff:...:event-type#<type>  | E      | 0                    |

| Handoff event     | user  | app        | EHR        | entities besides patient, encounter |
|-------------------|-------|------------|------------|-------------------------------------|
| launch            | IRCP  | DCM 110152 | DCM 110153 | -                                   |
| suggestions-shown | IRCP  | DCM 110152 | DCM 110153 | each evidence resource shown        |
| decision          | AUT   | DCM 110150 | -          | the referral (Handoff identifier)   |
| write-attempt     | AUT   | DCM 110153 | DCM 110152 | each resource written, else referral|
| write-held        | AUT   | DCM 110153 | DCM 110152 | the referral                        |
| audit-read        | IRCP  | DCM 110153 | -          | the referral log, with the query    |
| audit-export      | INF   | DCM 110153 | -          | the export (range, count, sha256)   |
| anything else     | AGNT* | DCM 110150 | DCM 110153 | -                                   |
(* v3-RoleClass.) 110153 = Source Role ID, 110152 = Destination Role ID, 110150 = Application:
as in BALP, the client of a Read is the destination and the server the source.

Every AuditEvent also has: `id` = the event's chain hash; subtype `urn:handoff:referral-log:
event-type#<type>` (the original type, always); the user (`who` = the fhirUser reference, or an
identifier for non-FHIR users such as an OS account) with `requestor` true; Handoff as an agent
and as `source.observer`; the patient (`type` 1 Person, `role` 1 Patient, `what` Patient/<id>)
and the encounter (`type` 2 System Object, `role` 4 Domain Resource, `what` Encounter/<id>);
`recorded` = the event time; `meta.security` R (restricted) and SUD (substance use disorder
information sensitivity, 42 CFR Part 2); and an entity (`type` 4 Other) for the log entry whose
`detail` carries seq, hash, prev_hash, event type and the canonical hashed bytes (base64), so
each line can be matched back to the log and its hash recomputed without the database.
Codes: DCM = http://dicom.nema.org/resources/ontology/DCM; user types from
http://terminology.hl7.org/CodeSystem/v3-ParticipationType.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from smartapp.audit.canonical import (
    canonical_bytes,
    canonical_json,
    document_of,
    format_time,
)
from smartapp.audit.csvform import (
    csv_records,  # noqa: F401 (re-exported: the CSV read back)
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
HANDOFF_EVENT = "urn:handoff:referral-log:event-type"
HANDOFF_LOG = "urn:handoff:referral-log"
HANDOFF_APP = {
    "identifier": {"system": "urn:handoff:application", "value": "handoff"},
    "display": "Handoff",
}

SECURITY = [
    {
        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
        "code": "R",
        "display": "restricted",
    },
    {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "SUD",
        "display": "substance use disorder information sensitivity",
    },
]


def _coding(system: str, code: str, display: str | None = None) -> dict:
    return {"system": system, "code": code} | ({"display": display} if display else {})


REST = _coding(EVENT_TYPE, "rest", "Restful Operation")
READ = _coding(RESTFUL, "read", "read")
CREATE = _coding(RESTFUL, "create", "create")
TRANSACTION = _coding(RESTFUL, "transaction", "transaction")
SOURCE_ROLE = _coding(DCM, "110153", "Source Role ID")
DESTINATION_ROLE = _coding(DCM, "110152", "Destination Role ID")
APPLICATION = _coding(DCM, "110150", "Application")
AUTHOR = _coding(PARTICIPATION, "AUT", "author (originator)")
RECIPIENT = _coding(PARTICIPATION, "IRCP", "information recipient")
INFORMANT = _coding(PARTICIPATION, "INF", "informant")
AGENT = _coding(ROLE_CLASS, "AGNT", "agent")


@dataclass(frozen=True)
class Pattern:
    """How one Handoff event type maps onto AuditEvent."""

    type: dict
    subtypes: tuple[dict, ...]
    action: str
    user: dict
    app: dict | None  # Handoff's agent type
    ehr: dict | None  # the EHR's agent type (when the event names an iss)


PATTERNS: dict[str, Pattern] = {
    "launch": Pattern(
        _coding(DCM, "110114", "User Authentication"),
        (_coding(DCM, "110122", "Login"),),
        "E",
        RECIPIENT,
        DESTINATION_ROLE,
        SOURCE_ROLE,
    ),
    "suggestions-shown": Pattern(REST, (READ,), "R", RECIPIENT, DESTINATION_ROLE, SOURCE_ROLE),
    "decision": Pattern(
        _coding(DCM, "110110", "Patient Record"), (), "C", AUTHOR, APPLICATION, None
    ),
    "write-attempt": Pattern(
        REST, (CREATE, TRANSACTION), "C", AUTHOR, SOURCE_ROLE, DESTINATION_ROLE
    ),
    "write-held": Pattern(REST, (CREATE, TRANSACTION), "C", AUTHOR, SOURCE_ROLE, DESTINATION_ROLE),
    "audit-read": Pattern(REST, (READ,), "R", RECIPIENT, SOURCE_ROLE, None),
    "audit-export": Pattern(
        _coding(DCM, "110106", "Export"), (), "R", INFORMANT, SOURCE_ROLE, None
    ),
}
WRITE_OUTCOMES = {"written": "0", "queued": "4", "failed": "8"}
_REFERENCE = re.compile(r"^(https?://\S+/)?[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


SOURCE = {"observer": HANDOFF_APP, "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}


def audit_event(event: Any, canonical: bytes | None = None, recorded: str | None = None) -> dict:
    """The FHIR R4 AuditEvent for one log event (a `LogEvent` or a row with its columns).

    `canonical`, `recorded`: the event's hashed bytes and canonical time where the caller has
    them already (the fast export), so they are not made twice."""
    pattern = _pattern(event.type)
    data = event.data or {}
    outcome, outcome_desc = outcome_of(event.type, data)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event.hash,
        "meta": {"security": SECURITY},
        "type": pattern.type,
        "subtype": [*pattern.subtypes, _coding(HANDOFF_EVENT, event.type)],
        "action": pattern.action,
        "recorded": recorded or format_time(event.at),
        "outcome": outcome,
    }
    if outcome_desc:
        resource["outcomeDesc"] = outcome_desc
    resource["agent"] = shared_agents(event.type, event.user_ref, event.iss)
    resource["source"] = SOURCE
    resource["entity"] = _entities(event, data, canonical)
    return resource


def _pattern(type_: str) -> Pattern:
    """The BALP pattern of an event type (the generic one for a type not in `PATTERNS`)."""
    return PATTERNS.get(type_) or Pattern(
        _coding(HANDOFF_EVENT, type_), (), "E", AGENT, APPLICATION, SOURCE_ROLE
    )


# The event types whose data each of `outcome_of`, `resource_references`, `referral_of` and
# `log_entities` reads: for any other type they give outcome "0" and no entity, unasked.
OUTCOME_TYPES = frozenset(("write-attempt", "write-held"))
RESOURCE_TYPES = frozenset(("suggestions-shown", "write-attempt"))
REFERRAL_TYPES = frozenset(("decision", "write-attempt", "write-held"))
LOG_TYPES = frozenset(("audit-read", "audit-export"))


def outcome_of(type_: str, data: dict) -> tuple[str, str | None]:
    if type_ not in OUTCOME_TYPES:
        return "0", None
    if type_ == "write-attempt":
        status = data.get("outcome")
        return WRITE_OUTCOMES.get(str(status), "8"), data.get("error") or (
            None if status == "written" else f"write {status}"
        )
    return "8", f"held in Handoff, not sent to the EHR: {data.get('reason', '')}".rstrip(": ")


def _who(user_ref: str) -> dict:
    if _REFERENCE.match(user_ref):
        return {"reference": user_ref}
    return {"identifier": {"system": "urn:handoff:user", "value": user_ref}, "display": user_ref}


@functools.lru_cache(maxsize=4096)
def shared_agents(type_: str, user_ref: str | None, iss: str | None) -> list[dict]:
    """`_agents`, made once per (type, user, EHR): an export repeats them on every line. The
    list is shared: serialised, never changed."""
    return _agents(SimpleNamespace(user_ref=user_ref, iss=iss), _pattern(type_))


def _agents(event: Any, pattern: Pattern) -> list[dict]:
    agents = []
    if event.user_ref:
        agents.append(
            {"type": {"coding": [pattern.user]}, "who": _who(event.user_ref), "requestor": True}
        )
    if pattern.app:
        agents.append(
            {"type": {"coding": [pattern.app]}, "who": HANDOFF_APP, "requestor": not event.user_ref}
        )
    if pattern.ehr and event.iss:
        agents.append(
            {
                "type": {"coding": [pattern.ehr]},
                "who": {
                    "identifier": {"system": "urn:ietf:rfc:3986", "value": event.iss},
                    "display": event.iss,
                },
                "requestor": False,
                "network": {"address": event.iss, "type": "5"},
            }
        )
    return agents


def entity_of(what: dict, type_code: str, role: str | None = None, **extra: Any) -> dict:
    types = {"1": "Person", "2": "System Object", "4": "Other"}
    roles = {"1": "Patient", "3": "Report", "4": "Domain Resource"}
    entity: dict[str, Any] = {
        "what": what,
        "type": _coding(ENTITY_TYPE, type_code, types[type_code]),
    }
    if role:
        entity["role"] = _coding(OBJECT_ROLE, role, roles[role])
    return entity | extra


def _entities(event: Any, data: dict, canonical: bytes | None = None) -> list[dict]:
    entities = []
    if event.patient_id:
        entities.append(entity_of({"reference": f"Patient/{event.patient_id}"}, "1", "1"))
    if event.encounter_id:
        entities.append(entity_of({"reference": f"Encounter/{event.encounter_id}"}, "2", "4"))
    for reference, role in data_references(event.type, data):
        entities.append(entity_of(reference, "2", role))
    entities.extend(log_entities(event.type, data))
    entities.append(log_entry(event, canonical))
    return [{k: v for k, v in e.items() if v is not None} for e in entities]


def log_entities(type_: str, data: dict) -> Iterator[dict]:
    """The referral log itself as an entity, for an auditor's read (with the query) and an
    export (range, count, sha256)."""
    if type_ not in LOG_TYPES:
        return
    if type_ == "audit-read":
        yield entity_of(
            {
                "identifier": {"system": HANDOFF_LOG, "value": "referral-log"},
                "display": "Handoff referral log",
            },
            "2",
            "3",
            description=str(data.get("query", "")) or None,
        )
    if type_ == "audit-export":
        described = {k: data[k] for k in ("from", "to", "format", "events", "sha256") if k in data}
        yield entity_of(
            {"display": "Handoff referral log export"},
            "2",
            "3",
            description=canonical_json(described),
        )


def data_references(type_: str, data: dict) -> Iterator[tuple[dict, str]]:
    """The resources an event is about, as (Reference, object-role code)."""
    for reference, role in resource_references(type_, data):
        yield {"reference": reference}, role
    referral = referral_of(type_, data)
    if referral is not None:
        yield referral_what(referral), "4"


def resource_references(type_: str, data: dict) -> Iterator[tuple[Any, str]]:
    """The EHR resources an event is about (the evidence shown, the resources written), as
    (reference, object-role code): each the `reference` of a Reference."""
    if type_ not in RESOURCE_TYPES:
        return
    if type_ == "suggestions-shown":
        seen: set[str] = set()
        for suggestion in data.get("suggestions", []):
            for reference in suggestion.get("evidence", []):
                if reference not in seen:
                    seen.add(reference)
                    yield reference, "4"
        return
    for item in _written(type_, data):
        if item.get("resourceType") and item.get("id"):
            role = "3" if item["resourceType"] == "DocumentReference" else "4"
            yield f"{item['resourceType']}/{item['id']}", role


def referral_of(type_: str, data: dict) -> str | None:
    """The referral an event is about, where it names no resource written instead."""
    if type_ in REFERRAL_TYPES and data.get("referral") and not _written(type_, data):
        return str(data["referral"])
    return None


def referral_what(referral: str) -> dict:
    """A referral as a Reference: Handoff's own identifier (no FHIR resource of its own)."""
    return {
        "identifier": {"system": "urn:handoff:referral", "value": referral},
        "display": "Handoff referral",
    }


def _written(type_: str, data: dict) -> list:
    return (data.get("written") or []) if type_ == "write-attempt" else []


def log_entry(event: Any, canonical: bytes | None = None) -> dict:
    """The chain link, so an exported line can be matched back and its hash recomputed."""
    if canonical is None:
        canonical = canonical_bytes(document_of(event))
    encoded = base64.b64encode(canonical).decode()
    return _link_entity(str(event.seq), event.hash, event.prev_hash, event.type, encoded)


def _link_entity(seq: str, hash_: str, prev_hash: str, type_: str, encoded: str) -> dict:
    """`log_entry` from its values as text (`encoded`: the canonical bytes in base64)."""
    return entity_of(
        {"identifier": {"system": HANDOFF_LOG, "value": seq}},
        "4",
        description=f"Handoff referral log entry #{seq}",
        detail=[
            {"type": "seq", "valueString": seq},
            {"type": "hash", "valueString": hash_},
            {"type": "prev_hash", "valueString": prev_hash},
            {"type": "event-type", "valueString": type_},
            {"type": "canonical", "valueBase64Binary": encoded},
        ],
    )
