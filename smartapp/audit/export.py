"""Export of the referral log: FHIR R4 AuditEvent (NDJSON) following IHE BALP, or CSV.

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

CSV: one row per event: seq, time, type, user, iss, patient, encounter, prev_hash, hash, data
(canonical JSON). Enough to recompute every hash (`csv_records`). Cells are not escaped against
spreadsheet formulas: the export is evidence and stays byte-faithful.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import functools
import hashlib
import io
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, BinaryIO, TextIO

import orjson
from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.canonical import (
    canonical_bytes,
    canonical_json,
    document_of,
    format_time,
)
from smartapp.audit.csvform import (
    CSV_COLUMNS,
    csv_records,  # noqa: F401 (re-exported: the CSV read back)
    csv_row,
    fast_csv_line,
)
from smartapp.audit.fastrows import Fast, proven, rows
from smartapp.audit.log import append
from smartapp.audit.models import LogEvent
from smartapp.db import Database

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
    outcome, outcome_desc = _outcome(event.type, data)
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
    resource["agent"] = _shared_agents(event.type, event.user_ref, event.iss)
    resource["source"] = SOURCE
    resource["entity"] = _entities(event, data, canonical)
    return resource


def _pattern(type_: str) -> Pattern:
    """The BALP pattern of an event type (the generic one for a type not in `PATTERNS`)."""
    return PATTERNS.get(type_) or Pattern(
        _coding(HANDOFF_EVENT, type_), (), "E", AGENT, APPLICATION, SOURCE_ROLE
    )


def _outcome(type_: str, data: dict) -> tuple[str, str | None]:
    if type_ == "write-attempt":
        status = data.get("outcome")
        return WRITE_OUTCOMES.get(str(status), "8"), data.get("error") or (
            None if status == "written" else f"write {status}"
        )
    if type_ == "write-held":
        return "8", f"held in Handoff, not sent to the EHR: {data.get('reason', '')}".rstrip(": ")
    return "0", None


def _who(user_ref: str) -> dict:
    if _REFERENCE.match(user_ref):
        return {"reference": user_ref}
    return {"identifier": {"system": "urn:handoff:user", "value": user_ref}, "display": user_ref}


@functools.lru_cache(maxsize=4096)
def _shared_agents(type_: str, user_ref: str | None, iss: str | None) -> list[dict]:
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


def _entity(what: dict, type_code: str, role: str | None = None, **extra: Any) -> dict:
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
        entities.append(_entity({"reference": f"Patient/{event.patient_id}"}, "1", "1"))
    if event.encounter_id:
        entities.append(_entity({"reference": f"Encounter/{event.encounter_id}"}, "2", "4"))
    for reference, role in _data_references(event.type, data):
        entities.append(_entity(reference, "2", role))
    entities.extend(_log_entities(event.type, data))
    entities.append(_log_entry(event, canonical))
    return [{k: v for k, v in e.items() if v is not None} for e in entities]


def _log_entities(type_: str, data: dict) -> Iterator[dict]:
    """The referral log itself as an entity, for an auditor's read (with the query) and an
    export (range, count, sha256)."""
    if type_ == "audit-read":
        yield _entity(
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
        yield _entity(
            {"display": "Handoff referral log export"},
            "2",
            "3",
            description=canonical_json(described),
        )


def _data_references(type_: str, data: dict) -> Iterator[tuple[dict, str]]:
    """The resources an event is about, as (Reference, object-role code)."""
    if type_ == "suggestions-shown":
        seen: set[str] = set()
        for suggestion in data.get("suggestions", []):
            for reference in suggestion.get("evidence", []):
                if reference not in seen:
                    seen.add(reference)
                    yield {"reference": reference}, "4"
        return
    written = (data.get("written") or []) if type_ == "write-attempt" else []
    for item in written:
        if item.get("resourceType") and item.get("id"):
            role = "3" if item["resourceType"] == "DocumentReference" else "4"
            yield {"reference": f"{item['resourceType']}/{item['id']}"}, role
    if (
        not written
        and data.get("referral")
        and type_ in ("decision", "write-attempt", "write-held")
    ):
        yield (
            {
                "identifier": {"system": "urn:handoff:referral", "value": str(data["referral"])},
                "display": "Handoff referral",
            },
            "4",
        )


def _log_entry(event: Any, canonical: bytes | None = None) -> dict:
    """The chain link, so an exported line can be matched back and its hash recomputed."""
    if canonical is None:
        canonical = canonical_bytes(document_of(event))
    encoded = base64.b64encode(canonical).decode()
    return _link_entity(str(event.seq), event.hash, event.prev_hash, event.type, encoded)


def _link_entity(seq: str, hash_: str, prev_hash: str, type_: str, encoded: str) -> dict:
    """`_log_entry` from its values as text (`encoded`: the canonical bytes in base64)."""
    return _entity(
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


# -- a proven row's line, fast ------------------------------------------------------------------
# A proven row's AuditEvent line is one `%`-format per event type, made once per export from
# `audit_event` itself with holes where the row's values go; the agents are serialised once per
# (type, user, EHR). A line is then the format filled with the row's values: the bytes
# `orjson.dumps(audit_event(...))` gives (tests pin them), without the resource's dicts built
# per line.

_HOLE = re.compile(rb'"@@([a-z]+)@@"|@@([a-z]+)@@')
# Holes filled with a whole JSON value (any other hole is text inside a JSON string); those
# standing for list elements (`_LISTED`) bring their own trailing comma, or nothing.
_WHOLE = (b"outcome", b"agent", b"patient", b"encounter", b"extra", b"value")
_LISTED = (b"patient", b"encounter", b"extra")
# The holes of a line, in the order they are filled.
_LINE_HOLES = (
    b"hash",
    b"time",
    b"outcome",
    b"agent",
    b"patient",
    b"encounter",
    b"extra",
    b"seq",
    b"seq",
    b"seq",
    b"hash",
    b"prev",
    b"canonical",
)
# Characters JSON escapes: a value with one of them goes the long way.
_ESCAPED = re.compile('["\\\\\x00-\x1f]')


def _hole(name: str) -> str:
    return f"@@{name}@@"


def _format(value: Any, holes: tuple[bytes, ...]) -> bytes:
    """`value` serialised with each `_hole(name)` made a `%b` (its quotes dropped for a whole
    value, `_WHOLE`); the holes must come in the order `holes` names them."""
    found: list[bytes] = []

    def placeholder(match: re.Match[bytes]) -> bytes:
        name = match.group(1) or match.group(2)
        found.append(name)
        if match.group(1) is not None and name not in _WHOLE:
            return b'"%b"'
        return b"%b\x00" if name in _LISTED else b"%b"  # marked: its comma goes

    text = _HOLE.sub(placeholder, orjson.dumps(value).replace(b"%", b"%%"))
    if tuple(found) != holes:
        raise AssertionError(f"holes {found} where {holes} were expected")
    return text.replace(b"\x00,", b"")  # (serialised JSON has no NUL of its own)


def _line_format(type_: str) -> bytes:
    """The line of a `type_` event with the holes `_LINE_HOLES`: hash, time, outcome (with
    outcomeDesc when there is one), agent, the patient's, encounter's and data's entities
    (each with a trailing comma; none: empty), seq (3 times), hash, prev, canonical (base64)."""
    blank = SimpleNamespace(
        type=type_,
        data={},
        hash=_hole("hash"),
        prev_hash=_hole("prev"),
        seq=_hole("seq"),
        at=None,
        user_ref=None,
        iss=None,
        patient_id=None,
        encounter_id=None,
    )
    resource = audit_event(blank, b"", _hole("time"))
    resource.pop("outcomeDesc", None)
    resource.update(outcome=_hole("outcome"), agent=_hole("agent"))
    link = resource["entity"][-1]
    link["detail"][-1]["valueBase64Binary"] = _hole("canonical")
    resource["entity"] = [_hole("patient"), _hole("encounter"), _hole("extra"), link]
    return _format(resource, _LINE_HOLES) + b"\n"


def _entity_format(what: dict, type_code: str, role: str, hole: bytes) -> bytes:
    """An entity with one hole, followed by a comma (a listed hole's filling)."""
    return _format(_entity(what, type_code, role), (hole,)) + b","


_PATIENT_FORMAT = _entity_format({"reference": f"Patient/{_hole('id')}"}, "1", "1", b"id")
_ENCOUNTER_FORMAT = _entity_format({"reference": f"Encounter/{_hole('id')}"}, "2", "4", b"id")
_REFERENCE_FORMATS = {
    role: _entity_format({"reference": _hole("value")}, "2", role, b"value") for role in ("3", "4")
}


class _FastLines:
    """Makes the NDJSON lines of proven rows; holds the formats and agents made so far."""

    def __init__(self) -> None:
        self.formats: dict[str, bytes] = {}
        self.agents: dict[tuple[str, Any, Any], bytes] = {}

    def line(self, row: Any, fast: Fast) -> bytes:
        """The line (with its newline) of a proven row (`fastrows`: seq, time, type, user,
        iss, patient, encounter, data, prev_hash, hash)."""
        seq, _, type_, user_ref, iss, patient, encounter, _, prev_hash, hash_ = row
        time = fast.time
        try:
            # The canonical bytes hold every value JSON-escaped: without a backslash in them no
            # value needs escaping (one scan in C); else the values put in as text are checked.
            if b"\\" in fast.canonical and _ESCAPED.search(
                f"{time}{prev_hash}{patient or ''}{encounter or ''}"
            ):
                return _long_line(row, fast)
            format_ = self.formats.get(type_)
            if format_ is None:
                if _HOLE.search(type_.encode()):  # a type that reads as a hole: no format
                    return _long_line(row, fast)
                format_ = self.formats[type_] = _line_format(type_)
            agents = self.agents.get((type_, user_ref, iss))
            if agents is None:
                if len(self.agents) > 4096:
                    self.agents.clear()
                agents = orjson.dumps(_shared_agents(type_, user_ref, iss))
                self.agents[type_, user_ref, iss] = agents
            if type_ in _DATA_TYPES:
                outcome, extra = _data_parts(type_, fast.data)
            else:
                outcome, extra = b'"0"', b""
            hash_bytes, seq_bytes = hash_.encode(), b"%d" % seq
            return format_ % (
                hash_bytes,
                time.encode(),
                outcome,
                agents,
                _PATIENT_FORMAT % patient.encode() if patient else b"",
                _ENCOUNTER_FORMAT % encounter.encode() if encounter else b"",
                extra,
                seq_bytes,
                seq_bytes,
                seq_bytes,
                hash_bytes,
                prev_hash.encode(),
                binascii.b2a_base64(fast.canonical, newline=False),
            )
        except (AttributeError, TypeError):  # a column of an unusual type (SQLite)
            return _long_line(row, fast)


# The event types whose data says the outcome or names entities (`_outcome`,
# `_data_references`, `_log_entities`).
_DATA_TYPES = frozenset(
    ("suggestions-shown", "decision", "write-attempt", "write-held", "audit-read", "audit-export")
)


def _data_parts(type_: str, data: dict) -> tuple[bytes, bytes]:
    """The outcome (with its description, if any) and the entities the data names (each
    followed by a comma), serialised."""
    outcome, outcome_desc = _outcome(type_, data)
    outcome_json = orjson.dumps(outcome)
    if outcome_desc:
        outcome_json += b',"outcomeDesc":' + orjson.dumps(outcome_desc)
    extra = []
    for reference, role in _data_references(type_, data):
        if len(reference) == 1 and "reference" in reference and role in _REFERENCE_FORMATS:
            extra.append(_REFERENCE_FORMATS[role] % orjson.dumps(reference["reference"]))
        else:
            extra.append(orjson.dumps(_entity(reference, "2", role)) + b",")
    for entity in _log_entities(type_, data):
        extra.append(orjson.dumps({k: v for k, v in entity.items() if v is not None}) + b",")
    return outcome_json, b"".join(extra)


def _long_line(row: Any, fast: Fast) -> bytes:
    """A proven row with a value JSON escapes (or of an unusual column type), the long way."""
    names = ("seq", "at", "type", "user_ref", "iss", "patient_id", "encounter_id")
    event = SimpleNamespace(**dict(zip(names, row, strict=False)), prev_hash=row[8], hash=row[9])
    event.data = fast.data
    return orjson.dumps(audit_event(event, fast.canonical, fast.time)) + b"\n"


# -- files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    events: int
    first_seq: int | None
    last_seq: int | None
    sha256: str
    # Events in range that could not be read (damaged rows): left out, named here and in the
    # export's log entry; `handoff audit verify` names the first of them.
    broken: tuple[int, ...] = ()


def select_events(
    session: Session,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]] = (),
):
    """Events with start <= time < end (and the `where` conditions), in chain order, read row
    by row (`smartapp.audit.rows`) so that a damaged one comes back marked instead of raising."""
    query = stored.select_events(*where).order_by(LogEvent.seq)
    if start is not None:
        query = query.where(LogEvent.at >= start)
    if end is not None:
        query = query.where(LogEvent.at < end)
    return stored.read(session, query)


def write_export(
    session: Session,
    out: TextIO,
    fmt: str,
    start: datetime | None,
    end: datetime | None,
    where: Sequence[ColumnElement[bool]] = (),
    keep: Callable[[Any], bool] | None = None,
) -> ExportResult:
    """Write the events in range to `out` as ndjson or csv; returns count and the sha256.

    `where` (SQL conditions) and `keep` (a test on each event, for what SQL cannot say) narrow
    the export to what a search found; without them it is every event in the range.
    """
    if fmt not in ("ndjson", "csv"):
        raise ValueError(f"unknown export format {fmt!r}")
    lines = _Lines(out, fmt)
    try:
        if keep is None:
            lines.add_all(session, rows(session, start, end, where))
        else:
            for event in select_events(session, start, end, where):
                if event.broken:
                    lines.broken.append(event.seq)
                elif keep(event):
                    lines.add(event)
    except BaseException:
        lines.abandon()
        raise
    return lines.close()


class _Lines:
    """The export being written: one line per event as UTF-8, handed on in blocks of about a
    megabyte (`_Sink`: hashed and written beside the making of the next lines); memory stays
    flat whatever the log's size."""

    BLOCK = 1 << 20

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.fmt = fmt
        self.sink = _Sink(out)
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self.broken: list[int] = []
        self.block: list[bytes] = []
        self.size = 0
        if fmt == "csv":
            self.block.append(_csv_text(CSV_COLUMNS).encode())

    def add(self, event: Any) -> None:
        """An event read the exact way (a `StoredEvent`, not damaged)."""
        line = self.exact_line(event)
        self.block.append(line)
        self.size += len(line)
        self.count += 1
        if self.first is None:
            self.first = event.seq
        self.last = event.seq
        if self.size > self.BLOCK:
            self._flush()

    def exact_line(self, event: Any) -> bytes:
        """The line of an event read the exact way (a `StoredEvent`, not damaged)."""
        if self.fmt == "csv":
            return _csv_text(csv_row(event)).encode()
        resource = audit_event(event)
        return (json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def add_all(self, session: Session, raws: Iterator[Any]) -> None:
        """Every row of `raws` (`fastrows.rows`): one that proves itself made into its line
        the fast way; any other read again the exact way (`rows`), left out if damaged."""
        line_of = fast_csv_line if self.fmt == "csv" else _FastLines().line
        block, size, count, first, last = self.block, self.size, self.count, self.first, self.last
        for raw in raws:
            fast = proven(raw)
            if fast is not None:
                line = line_of(raw, fast)
            else:
                event = stored.get(session, raw[0])
                if event is None:
                    continue
                if event.broken:
                    self.broken.append(event.seq)
                    continue
                line = self.exact_line(event)
            block.append(line)
            size += len(line)
            count += 1
            last = raw[0]
            if first is None:
                first = last
            if size > self.BLOCK:
                self.sink.put(block)
                block, size = [], 0
        self.block, self.size, self.count, self.first, self.last = block, size, count, first, last

    def _flush(self) -> None:
        self.sink.put(self.block)
        self.block, self.size = [], 0

    def close(self) -> ExportResult:
        self._flush()
        digest = self.sink.close()
        return ExportResult(self.count, self.first, self.last, digest, tuple(self.broken))

    def abandon(self) -> None:
        """Stop the sink's thread (the export failed)."""
        self.sink.close(raising=False)


class _Sink:
    """Where the export's blocks of lines go: joined, SHA-256 over them and written to `out`,
    by a thread of its own (a large join, hashing and file writes let go of the GIL, so they
    run beside the making of the next lines; a few blocks wait at most).

    To a UTF-8 text file (`io.TextIOWrapper`, where lines end in "\\n": not Windows) the bytes
    go to its binary buffer as they are, unencoded and undecoded; to anything else as text.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.binary = _binary_buffer(out)
        if self.binary is not None:
            out.flush()  # what the caller wrote first goes first
        self.digest = hashlib.sha256()
        self.blocks: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="audit-export-sink", daemon=True)
        self.thread.start()

    def put(self, lines: list[bytes]) -> None:
        if self.error is not None:
            raise self.error
        self.blocks.put(lines)

    def _run(self) -> None:
        while (lines := self.blocks.get()) is not None:
            if self.error is not None:
                continue  # drained, so that `put` never blocks for ever
            try:
                block = b"".join(lines)
                self.digest.update(block)
                if self.binary is not None:
                    self.binary.write(block)
                else:
                    self.out.write(block.decode("utf-8"))
            except BaseException as exc:  # handed to the exporting thread
                self.error = exc

    def close(self, raising: bool = True) -> str:
        """Wait for the blocks to be written; the SHA-256 of everything written."""
        self.blocks.put(None)
        self.thread.join()
        if self.error is not None and raising:
            raise self.error
        return self.digest.hexdigest()


def _binary_buffer(out: TextIO) -> BinaryIO | None:
    """The binary buffer under `out` where writing UTF-8 bytes there is writing the text."""
    if not isinstance(out, io.TextIOWrapper) or os.linesep != "\n":
        return None
    try:
        utf8 = codecs.lookup(out.encoding).name == "utf-8"
    except LookupError:
        return None
    return out.buffer if utf8 else None


def _csv_text(cells: Sequence[str]) -> str:
    """One CSV row as the csv module writes it."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue()


def export(
    db: Database,
    out: TextIO,
    *,
    fmt: str,
    start: datetime | None,
    end: datetime | None,
    user: str,
    destination: str = "-",
    where: Sequence[ColumnElement[bool]] = (),
    keep: Callable[[Any], bool] | None = None,
    filter_description: str | None = None,
) -> ExportResult:
    """Export, then log the export itself (who, what range and filter, how many, the output's
    sha256). `where`, `keep`: see `write_export`; `filter_description` says them in words."""
    with db.session() as session:
        result = write_export(session, out, fmt, start, end, where, keep)
    data: dict[str, Any] = {
        "from": format_time(start) if start else None,
        "to": format_time(end) if end else None,
        "format": fmt,
        "events": result.events,
        "first_seq": result.first_seq,
        "last_seq": result.last_seq,
        "sha256": result.sha256,
        "out": destination,
    }
    if filter_description:
        data["filter"] = filter_description
    if result.broken:
        data["broken"] = list(result.broken)
    with db.session() as session:
        append(session, "audit-export", user_ref=user, data=data)
    return result
