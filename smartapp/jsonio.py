"""JSON text read and written with orjson where it gives what the standard library gives,
the standard library otherwise: for the database's JSON columns (`smartapp.db`) and the web
layer's request and response bodies (`smartapp.web.jsonprovider`). No Flask, no database."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["read_json", "write_json"]


def read_json(text: str | bytes) -> Any:
    """A JSON document (a column's value: the shown suggestions, a referral's decision and
    plan, log data; a request's body): orjson, several times faster than the standard library.
    What orjson reads otherwise is left to the standard library, as before: NaN and text not in
    UTF-8 (refused by orjson) and integers past 64 bits (a float in orjson, an exact int here:
    a logged value must read back exactly as it was hashed)."""
    digits = _LONG_DIGITS if isinstance(text, str) else _LONG_DIGIT_BYTES
    if digits.search(text) is None:  # type: ignore[arg-type]
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


# A run of 20 digits: a number orjson would read as a float (or text that merely holds one).
_LONG_DIGITS = re.compile(r"\d{20}")
_LONG_DIGIT_BYTES = re.compile(rb"\d{20}")
