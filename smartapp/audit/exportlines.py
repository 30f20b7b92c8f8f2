"""A proven row's AuditEvent line, fast (`smartapp.audit.export`): one format per event type
made from `smartapp.audit.auditevent.audit_event` itself, filled with the row's values; the
same bytes as `orjson.dumps(audit_event(...))`."""

from __future__ import annotations

import binascii
import hashlib
import re
from types import SimpleNamespace
from typing import Any

import orjson

from smartapp.audit.auditevent import (
    LOG_TYPES,
    OUTCOME_TYPES,
    REFERRAL_TYPES,
    RESOURCE_TYPES,
    audit_event,
    entity_of,
    log_entities,
    outcome_of,
    referral_of,
    referral_what,
    resource_references,
    shared_agents,
)
from smartapp.audit.canonical import VERSION
from smartapp.audit.fastrows import canonical_time

# -- a proven row's line, fast ------------------------------------------------------------------
# A proven row's AuditEvent line is one `%`-format per event type, made once per export from
# `audit_event` itself with holes where the row's values go; the agents are serialised once per
# (type, user, EHR). A line is then the format's constant pieces joined with the row's values
# (`_pieces`): the bytes `orjson.dumps(audit_event(...))` gives (tests pin them), without the
# resource's dicts built per line.

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
_SORTED = orjson.OPT_SORT_KEYS
_loads, _dumps, _sha256, _base64 = orjson.loads, orjson.dumps, hashlib.sha256, binascii.b2a_base64
_Fragment = orjson.Fragment


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


def _pieces(format_: bytes) -> tuple[bytes, ...]:
    """The constant text between a `%`-format's holes (`%%` read as `%`): a line is then one
    join of the pieces and the values, cheaper than formatting kilobytes with `%`."""
    pieces, current = [], b""
    tokens = re.split(rb"%([%b])", format_)
    for index in range(0, len(tokens), 2):
        current += tokens[index]
        if index + 1 < len(tokens):
            if tokens[index + 1] == b"%":
                current += b"%"
            else:
                pieces.append(current)
                current = b""
    return (*pieces, current)


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


_PATIENT_PRE, _PATIENT_POST = _pieces(
    _entity_format({"reference": f"Patient/{_hole('id')}"}, "1", "1", b"id")
)
_ENCOUNTER_PRE, _ENCOUNTER_POST = _pieces(
    _entity_format({"reference": f"Encounter/{_hole('id')}"}, "2", "4", b"id")
)
_REFERENCE_FORMATS = {
    role: _entity_format({"reference": _hole("value")}, "2", role, b"value") for role in ("3", "4")
}
_REFERRAL_PRE, _REFERRAL_POST = _pieces(
    _entity_format(referral_what(_hole("value")), "2", "4", b"value")
)


class _FastLines:
    """Makes the NDJSON lines of rows that prove themselves; holds the formats and agents made
    so far."""

    # After this many rows in a row that the stored text did not prove (a log written before
    # data was stored sorted), the text is tried again only every `_RETRY` rows.
    _MISSES, _RETRY = 8, 1024

    def __init__(self) -> None:
        self.formats: dict[str, tuple[bytes, ...]] = {}
        self.agents: dict[tuple[str, Any, Any], bytes] = {}
        self.misses = 0
        self.rows = 0

    def row_line(self, row: Any) -> bytes | None:
        """The line (with its newline) of a raw row (`fastrows`: seq, time, type, user, iss,
        patient, encounter, data, prev_hash, hash) that proves itself, else None (the row is
        then read the exact way).

        The proof is `fastrows.proven`'s, made here in one pass without its CSV part (the
        data's own sorted bytes): the row's candidate canonical bytes must hash to its hash.
        The candidate is first made with the stored data's text as it is (`_proven_as_stored`:
        the text is the canonical form's own where the data was stored sorted), so a row
        whose data the line does not name is proven without parsing it."""
        self.rows += 1
        proven: tuple[str, dict | None, bytes] | None = None
        if self.misses < self._MISSES or self.rows % self._RETRY == 0:
            proven = _proven_as_stored(row)
            self.misses = 0 if proven is not None else self.misses + 1
        if proven is None:
            proven = _proven(row)
            if proven is None:
                return None
        time, data, canonical = proven
        try:
            return self._line(row, time, data, canonical)
        except (AttributeError, TypeError):  # a column of an unusual type (SQLite)
            return _long_line(row, time, _parsed(row, data), canonical)

    def _line(self, row: Any, time: str, data: dict | None, canonical: bytes) -> bytes:
        """The line of a row `_proven` proved, from its type's format (`data` None: not
        parsed yet; parsed here if the line names it)."""
        seq, _, type_, user_ref, iss, patient, encounter, _, prev_hash, hash_ = row
        # The canonical bytes hold every value JSON-escaped: without a backslash in them no
        # value needs escaping (one scan in C); else the values put in as text are checked.
        if canonical.find(b"\\") >= 0 and _ESCAPED.search(
            f"{time}{prev_hash}{patient or ''}{encounter or ''}"
        ):
            return _long_line(row, time, _parsed(row, data), canonical)
        format_ = self.formats.get(type_)
        if format_ is None:
            if _HOLE.search(type_.encode()):  # a type that reads as a hole: no format
                return _long_line(row, time, _parsed(row, data), canonical)
            format_ = self.formats[type_] = _pieces(_line_format(type_))
        agents = self.agents.get((type_, user_ref, iss))
        if agents is None:
            if len(self.agents) > 4096:
                self.agents.clear()
            agents = orjson.dumps(shared_agents(type_, user_ref, iss))
            self.agents[type_, user_ref, iss] = agents
        if type_ in _DATA_TYPES:
            outcome, extra = _data_parts(type_, _parsed(row, data))
        else:
            outcome, extra = b'"0"', b""
        hash_bytes, seq_bytes = hash_.encode(), b"%d" % seq
        p = format_  # the pieces between the holes `_LINE_HOLES`, filled in their order
        return b"".join(
            (
                p[0],
                hash_bytes,
                p[1],
                time.encode(),
                p[2],
                outcome,
                p[3],
                agents,
                p[4],
                _PATIENT_PRE + patient.encode() + _PATIENT_POST if patient else b"",
                p[5],
                _ENCOUNTER_PRE + encounter.encode() + _ENCOUNTER_POST if encounter else b"",
                p[6],
                extra,
                p[7],
                seq_bytes,
                p[8],
                seq_bytes,
                p[9],
                seq_bytes,
                p[10],
                hash_bytes,
                p[11],
                prev_hash.encode(),
                p[12],
                _base64(canonical, newline=False),
                p[13],
            )
        )


def _proven_as_stored(row: Any) -> tuple[str, None, bytes] | None:
    """(the row's time as the export writes it, None: its data not parsed, its canonical
    bytes) when the canonical document made with the stored data's text as it is hashes to
    the row's hash, else None. Only a text that is the canonical form's own can: the data is
    then the JSON object that form wrote."""
    time, text = canonical_time(row[1]), row[7]
    if time is None or type(text) is not str or not text.startswith("{"):
        return None
    try:
        canonical = _document(row, time, _Fragment(text), 0)
    except TypeError:
        return None
    if _sha256(canonical).hexdigest() != row[9]:
        return None
    return time, None, canonical


def _document(row: Any, time: str, data: Any, option: int) -> bytes:
    """The canonical document's candidate bytes of a row, with `data` as given (a dict,
    serialised with `option`, or the stored text as a fragment)."""
    seq, _, type_, user_ref, iss, patient, encounter, _, prev_hash, _ = row
    return _dumps(
        {
            "at": time,
            "data": data,
            "encounter": encounter,
            "iss": iss,
            "patient": patient,
            "prev_hash": prev_hash,
            "seq": seq,
            "type": type_,
            "user": user_ref,
            "v": VERSION,
        },
        option=option,
    )


def _parsed(row: Any, data: dict | None) -> dict:
    """The row's data: `data`, or its stored text parsed (proven already: a JSON object)."""
    return _loads(row[7]) if data is None else data


def _proven(row: Any) -> tuple[str, dict, bytes] | None:
    """(the row's time as the export writes it, its data, its canonical bytes) when the
    candidate canonical bytes hash to the row's hash, else None."""
    time = canonical_time(row[1])
    if time is None:
        return None
    try:
        data = _loads(row[7])
        canonical = _document(row, time, data, _SORTED)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if type(data) is not dict or _sha256(canonical).hexdigest() != row[9]:
        return None
    return time, data, canonical


# The event types whose data says the outcome or names entities.
_DATA_TYPES = OUTCOME_TYPES | RESOURCE_TYPES | REFERRAL_TYPES | LOG_TYPES


def _data_parts(type_: str, data: dict) -> tuple[bytes, bytes]:
    """The outcome (with its description, if any) and the entities the data names (each
    followed by a comma), serialised: the referral and the resources from their formats;
    each asked only of the types whose data it reads."""
    outcome_json = b'"0"'
    if type_ in OUTCOME_TYPES:
        outcome, outcome_desc = outcome_of(type_, data)
        outcome_json = _OUTCOMES.get(outcome) or _dumps(outcome)
        if outcome_desc:
            outcome_json += b',"outcomeDesc":' + _dumps(outcome_desc)
    extra = b""
    if type_ in RESOURCE_TYPES:
        for reference, role in resource_references(type_, data):
            extra += _REFERENCE_FORMATS[role] % _dumps(reference)
    if type_ in REFERRAL_TYPES:
        referral = referral_of(type_, data)
        if referral is not None:
            extra += _REFERRAL_PRE + _dumps(referral) + _REFERRAL_POST
    if type_ in LOG_TYPES:
        for entity in log_entities(type_, data):
            extra += _dumps({k: v for k, v in entity.items() if v is not None}) + b","
    return outcome_json, extra


_OUTCOMES = {code: orjson.dumps(code) for code in ("0", "4", "8")}


def _long_line(row: Any, time: str, data: dict, canonical: bytes) -> bytes:
    """A proven row with a value JSON escapes (or of an unusual column type), the long way."""
    names = ("seq", "at", "type", "user_ref", "iss", "patient_id", "encounter_id")
    event = SimpleNamespace(**dict(zip(names, row, strict=False)), prev_hash=row[8], hash=row[9])
    event.data = data
    return orjson.dumps(audit_event(event, canonical, time)) + b"\n"
