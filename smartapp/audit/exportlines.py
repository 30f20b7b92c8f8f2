"""A proven row's AuditEvent line, fast (`smartapp.audit.export`): one `%`-format per event
type made from `smartapp.audit.auditevent.audit_event` itself, filled with the row's values;
the same bytes as `orjson.dumps(audit_event(...))`."""

from __future__ import annotations

import binascii
import re
from types import SimpleNamespace
from typing import Any

import orjson

from smartapp.audit.auditevent import (
    audit_event,
    data_references,
    entity_of,
    log_entities,
    outcome_of,
    shared_agents,
)
from smartapp.audit.fastrows import Fast

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
    return _format(entity_of(what, type_code, role), (hole,)) + b","


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
                agents = orjson.dumps(shared_agents(type_, user_ref, iss))
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


# The event types whose data says the outcome or names entities (`outcome`,
# `data_references`, `log_entities`).
_DATA_TYPES = frozenset(
    ("suggestions-shown", "decision", "write-attempt", "write-held", "audit-read", "audit-export")
)


def _data_parts(type_: str, data: dict) -> tuple[bytes, bytes]:
    """The outcome (with its description, if any) and the entities the data names (each
    followed by a comma), serialised."""
    outcome, outcome_desc = outcome_of(type_, data)
    outcome_json = orjson.dumps(outcome)
    if outcome_desc:
        outcome_json += b',"outcomeDesc":' + orjson.dumps(outcome_desc)
    extra = []
    for reference, role in data_references(type_, data):
        if len(reference) == 1 and "reference" in reference and role in _REFERENCE_FORMATS:
            extra.append(_REFERENCE_FORMATS[role] % orjson.dumps(reference["reference"]))
        else:
            extra.append(orjson.dumps(entity_of(reference, "2", role)) + b",")
    for entity in log_entities(type_, data):
        extra.append(orjson.dumps({k: v for k, v in entity.items() if v is not None}) + b",")
    return outcome_json, b"".join(extra)


def _long_line(row: Any, fast: Fast) -> bytes:
    """A proven row with a value JSON escapes (or of an unusual column type), the long way."""
    names = ("seq", "at", "type", "user_ref", "iss", "patient_id", "encounter_id")
    event = SimpleNamespace(**dict(zip(names, row, strict=False)), prev_hash=row[8], hash=row[9])
    event.data = fast.data
    return orjson.dumps(audit_event(event, fast.canonical, fast.time)) + b"\n"
