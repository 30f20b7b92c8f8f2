"""JSON text read and written with orjson where it gives what the standard library gives,
the standard library otherwise: for the database's JSON columns (`smartapp.db`) and the web
layer's request and response bodies (`smartapp.web.jsonprovider`). No Flask, no database."""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["read_json", "write_json"]


def read_json(text: str | bytes) -> Any:
    """A JSON document (a column's value: the shown suggestions, a referral's decision and
    plan, log data; a request's body): orjson, several times faster than the standard library.
    What orjson reads otherwise is left to the standard library, as before: NaN and text not in
    UTF-8 (refused by orjson) and integers past 64 bits (a float in orjson, an exact int here:
    a logged value must read back exactly as it was hashed)."""
    if not _long_digit_run(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def write_json(value: Any) -> str:
    """A JSON column's text: orjson (non-string keys as strings, as the standard library
    writes them), the standard library for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value)


def _long_digit_run(text: str | bytes) -> bool:
    """Whether `text` holds a run of 20 ASCII digits: a number orjson would read as a float
    (or text that merely holds one). Every byte mapped to "0" (a digit) or " " (the rest) and
    the run looked for as bytes: a regular expression over the text cost up to 17 times the
    parse itself. JSON numbers are ASCII digits only."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return _DIGIT_RUN in data.translate(_DIGITS)


_DIGITS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_DIGIT_RUN = b"0" * 20
