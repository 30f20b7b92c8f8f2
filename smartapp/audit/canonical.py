"""The canonical form the chain hashes and the checkpoints sign.

Written down so that an auditor can recompute a hash with nothing but this description:

    event hash = SHA-256, lowercase hex, of the UTF-8 bytes of the JSON object
      {"at": TIME, "data": DATA, "encounter": E, "iss": I, "patient": P, "prev_hash": H,
       "seq": N, "type": T, "user": U, "v": 1}
    serialised with keys sorted (by code point, at every depth), no whitespace
    (separators "," and ":"), non-ASCII characters as themselves (not \\u escapes), NaN and
    infinities refused; absent values are JSON null; N is an integer.
    TIME = the event time in UTC as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (always six digits).
    The first event's prev_hash is GENESIS (below); every later one is the previous event's hash.

    checkpoint signature = Ed25519 over the same serialisation of
      {"at": TIME, "hash": H, "key": KEY_ID, "log": "handoff-referral-log", "prev": P_SEQ,
       "seq": N, "v": 1}
    where (N, H) is the chain head signed, TIME the checkpoint's time, P_SEQ the previous
    checkpoint's seq (0 for the first) and KEY_ID the signing key's id (see `signing`).

Times are stored as timestamps (microsecond precision on SQLite and PostgreSQL alike) and come
back naive from SQLite, aware from PostgreSQL: both are read as UTC, so the hash recomputes
identically after a round trip through either. `data` is stored exactly as it was hashed
(`normalize_data`), so integer dict keys or tuples cannot drift between write and re-read.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson

VERSION = 1
LOG_ID = "handoff-referral-log"
GENESIS = hashlib.sha256(b"handoff referral log genesis v1").hexdigest()


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 characters as themselves, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_bytes(value: Any) -> bytes:
    return canonical_json(value).encode("utf-8")


def normalize_data(data: dict | None) -> dict:
    """The event data as it will read back from the database (what is hashed is what is stored)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"log event data must be a dict, not {type(data).__name__}")
    # Plain dumps first: keys of mixed types (1 and "1") cannot be sorted before they are strings.
    return json.loads(json.dumps(data, ensure_ascii=False, allow_nan=False))


def sorted_data(data: dict) -> dict:
    """`data` (normalised) with every object's keys in sorted order: stored so, the column's
    text is the data's part of the canonical document byte for byte (where orjson writes what
    `canonical_json` writes), and an export proves a row without parsing and sorting its data
    (`smartapp.audit.exportlines`). The same values: only the order of keys changes."""
    try:
        return orjson.loads(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
    except (orjson.JSONEncodeError, TypeError):  # an integer past 64 bits: orjson refuses it
        return json.loads(canonical_json(data))


def format_time(value: datetime) -> str:
    """UTC, ISO-8601, six fractional digits, `Z`; naive values (SQLite) are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """The inverse of `format_time` (also accepts any ISO-8601 offset)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def event_document(
    *,
    seq: int,
    at: datetime,
    type_: str,
    user_ref: str | None,
    iss: str | None,
    patient_id: str | None,
    encounter_id: str | None,
    data: dict,
    prev_hash: str,
) -> dict:
    """The object whose canonical serialisation is hashed."""
    return {
        "v": VERSION,
        "seq": int(seq),
        "at": format_time(at),
        "type": type_,
        "user": user_ref,
        "iss": iss,
        "patient": patient_id,
        "encounter": encounter_id,
        "data": data,
        "prev_hash": prev_hash,
    }


def event_hash(event: Any, seq: int | None = None) -> str:
    """The hash of a `LogEvent` (or anything with its attributes), optionally as if at `seq`.

    Recomputing at another `seq` is how verification recognises a moved event.
    """
    return hashlib.sha256(canonical_bytes(document_of(event, seq))).hexdigest()


def document_of(event: Any, seq: int | None = None) -> dict:
    """The hashed document of a `LogEvent` (or anything with its attributes)."""
    return event_document(
        seq=event.seq if seq is None else seq,
        at=event.at,
        type_=event.type,
        user_ref=event.user_ref,
        iss=event.iss,
        patient_id=event.patient_id,
        encounter_id=event.encounter_id,
        data=event.data,
        prev_hash=event.prev_hash,
    )


def checkpoint_payload(*, seq: int, hash_: str, at: datetime, prev_seq: int, key_id: str) -> bytes:
    """The bytes a checkpoint signs."""
    return canonical_bytes(
        {
            "v": VERSION,
            "log": LOG_ID,
            "seq": int(seq),
            "hash": hash_,
            "at": format_time(at),
            "prev": int(prev_seq or 0),
            "key": key_id,
        }
    )
