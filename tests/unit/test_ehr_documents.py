"""EhrDocuments: an EHR's key set kept between launches, fetched again for a kid it does not
hold (a key rotation), at most every `refetch_after` seconds; `ttl` 0 keeps nothing. Served
over real HTTP by a small server whose key set the test changes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smartapp.launch.client import EhrDocuments

TIMEOUT = (2.0, 5.0)


class KeySetServer:
    """Serves `document` at /jwks and counts the GETs."""

    def __init__(self) -> None:
        self.document: dict = {"keys": [{"kid": "k1", "kty": "EC"}]}
        self.gets = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.gets += 1
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def keys() -> Iterator[KeySetServer]:
    server = KeySetServer()
    yield server
    server.server.shutdown()


def test_kept_then_fetched_again_for_a_new_kid(keys):
    documents = EhrDocuments(ttl=300, refetch_after=0)
    assert documents.key_set(keys.url, "k1", TIMEOUT)["keys"][0]["kid"] == "k1"
    assert documents.key_set(keys.url, "k1", TIMEOUT) and keys.gets == 1  # kept
    keys.document = {"keys": [{"kid": "k2", "kty": "EC"}]}  # the EHR rotated its key
    assert documents.key_set(keys.url, "k2", TIMEOUT)["keys"][0]["kid"] == "k2"
    assert keys.gets == 2


def test_an_unknown_kid_is_not_fetched_again_and_again(keys):
    documents = EhrDocuments(ttl=300, refetch_after=30)
    documents.key_set(keys.url, "k1", TIMEOUT)
    for _ in range(5):  # a kid no key set holds: the set fetched just now is answered
        assert documents.key_set(keys.url, "nope", TIMEOUT)["keys"][0]["kid"] == "k1"
    assert keys.gets == 1


def test_ttl_zero_keeps_nothing(keys):
    documents = EhrDocuments(ttl=0)
    documents.key_set(keys.url, "k1", TIMEOUT)
    documents.key_set(keys.url, "k1", TIMEOUT)
    assert keys.gets == 2
