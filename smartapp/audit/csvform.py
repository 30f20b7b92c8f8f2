"""The referral log's CSV export form: one row per event, enough to recompute every hash.

Columns: seq, time, type, user, iss, patient, encounter, prev_hash, hash, data (canonical
JSON). Cells are not escaped against spreadsheet formulas: the export is evidence and stays
byte-faithful.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace
from typing import Any, TextIO

import orjson

from smartapp.audit.canonical import canonical_json, format_time, parse_time
from smartapp.audit.fastrows import Fast

CSV_COLUMNS = (
    "seq",
    "time",
    "type",
    "user",
    "iss",
    "patient",
    "encounter",
    "prev_hash",
    "hash",
    "data",
)


def csv_row(event: Any) -> list[str]:
    return [
        str(event.seq),
        format_time(event.at),
        event.type,
        event.user_ref or "",
        event.iss or "",
        event.patient_id or "",
        event.encounter_id or "",
        event.prev_hash,
        event.hash,
        canonical_json(event.data or {}),
    ]


def csv_records(stream: TextIO) -> list[SimpleNamespace]:
    """Read an exported CSV back into event-like records (for checks and re-verification)."""
    records = []
    for row in csv.DictReader(stream):
        records.append(
            SimpleNamespace(
                seq=int(row["seq"]),
                at=parse_time(row["time"]),
                type=row["type"],
                user_ref=row["user"] or None,
                iss=row["iss"] or None,
                patient_id=row["patient"] or None,
                encounter_id=row["encounter"] or None,
                prev_hash=row["prev_hash"],
                hash=row["hash"],
                data=json.loads(row["data"]),
            )
        )
    return records


def fast_csv_row(event: Any, fast: Fast) -> list[str]:
    """`csv_row` of a proven row: its data cut from the canonical bytes already made."""
    data = orjson.dumps(event.data, option=orjson.OPT_SORT_KEYS).decode()
    return [
        str(event.seq),
        fast.time,
        event.type,
        event.user_ref or "",
        event.iss or "",
        event.patient_id or "",
        event.encounter_id or "",
        event.prev_hash,
        event.hash,
        data,
    ]
