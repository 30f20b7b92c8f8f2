"""The app's JSON provider (orjson underneath) gives what Flask's own provider gives: the same
JSON values, sorted keys, compact, dates as HTTP dates, dataclasses, UUIDs and Decimals through
Flask's default; request bodies read as json.loads reads them."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider

from smartapp.web.jsonprovider import FastJSONProvider


@dataclasses.dataclass
class Point:
    x: int
    label: str


VALUES = [
    {"b": 1, "a": [1.5, None, True], "é": "ünïcode"},
    {"when": datetime(2026, 12, 2, 4, 4, tzinfo=UTC), "id": uuid.UUID(int=7)},
    {"money": Decimal("1.10"), "point": Point(3, "p")},
    {2: "two", 10: "ten"},
    {"big": 2**70},
]


@pytest.fixture
def apps() -> tuple[Flask, Flask]:
    fast, plain = Flask("fast"), Flask("plain")
    fast.json = FastJSONProvider(fast)
    plain.json = DefaultJSONProvider(plain)
    return fast, plain


@pytest.mark.parametrize("value", VALUES)
def test_same_json_as_flask(apps, value):
    fast, plain = apps
    with fast.app_context():
        ours = fast.json.dumps(value)
        answer = jsonify(value).get_data(as_text=True)
    with plain.app_context():
        theirs = plain.json.dumps(value)
    assert json.loads(ours) == json.loads(theirs) == json.loads(answer)
    assert list(json.loads(answer)) == list(json.loads(theirs))  # keys in the same order


def test_request_bodies_read_as_the_standard_library_reads_them(apps):
    fast, _ = apps

    @fast.post("/echo")
    def echo():
        return jsonify(request.get_json())

    body = '{"n": 123456789012345678901234567890, "x": NaN, "s": "\\u00e9"}'
    answer = fast.test_client().post("/echo", data=body, content_type="application/json")
    assert answer.status_code == 200
    assert json.loads(answer.get_data(as_text=True))["n"] == 123456789012345678901234567890
