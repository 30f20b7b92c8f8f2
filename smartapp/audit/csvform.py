"""The referral log's CSV export form: one row per event, enough to recompute every hash.

Columns: seq, time, type, user, iss, patient, encounter, prev_hash, hash, data (canonical
JSON). Cells are not escaped against spreadsheet formulas: the export is evidence and stays
byte-faithful.
"""

from __future__ import annotations

import csv
import io
import json
import re
from types import SimpleNamespace
from typing import Any, TextIO

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


# A cell the csv module quotes (QUOTE_MINIMAL, "\r\n" line ends): one with these in it.
_QUOTED = re.compile('[,"\r\n]')


def fast_csv_line(row: Any, fast: Fast) -> bytes:
    """The CSV line of a proven row (`fastrows`: seq, time, type, user, iss, patient,
    encounter, data, prev_hash, hash) as UTF-8: the bytes `csv.writer` writes for `csv_row`,
    with the data's canonical bytes as `proven` made them. A row whose cells need quoting
    other than the data's (rare) goes through the csv module."""
    seq, _, type_, user_ref, iss, patient, encounter, _, prev_hash, hash_ = row
    cells = (fast.time, type_, user_ref or "", iss or "", patient or "", encounter or "", prev_hash)
    try:
        if _QUOTED.search("".join(cells)):
            return _csv_module_line(row, fast)
        body = fast.body
        if b'"' in body or b"," in body:
            body = b'"' + body.replace(b'"', b'""') + b'"'
        return b"%d,%b,%b,%b\r\n" % (seq, ",".join(cells).encode(), hash_.encode(), body)
    except TypeError:  # a cell of an unusual type (SQLite)
        return _csv_module_line(row, fast)


def _csv_module_line(row: Any, fast: Fast) -> bytes:
    out = io.StringIO()
    cells = [str(row[0]), fast.time, *(cell or "" for cell in row[2:7]), row[8], row[9]]
    csv.writer(out).writerow([*cells, fast.body.decode()])
    return out.getvalue().encode()
