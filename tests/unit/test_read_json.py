"""The JSON columns' reader (smartapp.db.read_json) reads every document exactly as the
standard library does: a logged value must read back as it was hashed."""

from __future__ import annotations

import json
import math

import pytest

from smartapp.jsonio import read_json, write_json

DOCUMENTS = [
    '{"a": 1, "b": [1.5, -0.0, 1e-07, 3e+20], "c": "x\\u00e9\\ud83d\\ude00", "d": null}',
    '{"big": 123456789012345678901234567890, "neg": -98765432109876543210987}',
    '{"max64": 18446744073709551615, "min64": -9223372036854775808}',
    '{"id": "12345678901234567890123"}',  # a long digit run in a string: still exact
    '{"s": "' + "\u0661" * 20 + '"}',  # 20 digits not ASCII, as characters: no number
    '{"lone": "\\ud800"}',  # a lone surrogate: orjson refuses it, read as before
    '{"dup": 1, "dup": 2}',
    "[]",
    '"text"',
    "1e400",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_read_like_the_standard_library(text):
    expected = json.loads(text)
    found = read_json(text)
    assert found == expected and type(found) is type(expected)
    assert json.dumps(found) == json.dumps(expected)
    assert read_json(text.encode("utf-8", "surrogatepass")) == expected or "\\ud800" in text


def test_nan_reads_as_before():
    assert math.isnan(read_json('{"a": NaN}')["a"])


@pytest.mark.parametrize("text", DOCUMENTS[:-1])
def test_written_text_reads_back_the_same(text):
    value = json.loads(text)
    assert read_json(write_json(value)) == value
    assert json.loads(write_json(value)) == value


def test_written_like_the_standard_library_for_keys_and_big_numbers():
    value = {1: "one", "big": 2**70, "nested": {"x": [1, 2.5, None, True]}}
    assert json.loads(write_json(value)) == json.loads(json.dumps(value))
