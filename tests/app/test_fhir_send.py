"""FhirClient's calls go out through smartapp.fhir.http.send (the request prepared without
requests' per-call merging of settings): on the wire exactly what the shared session's own
`request` sends, with the response hooks run and no cookie kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from smartapp.fhir import http
from smartapp.fhir.client import FhirClient


class Echo(BaseHTTPRequestHandler):
    """Records each request (method, path, headers, body); answers a Patient and a cookie."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Echo.seen.append((self.command, self.path, sorted(self.headers.items()), body))
        answer = b'{"resourceType":"Patient","id":"1"}'
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("Set-Cookie", "tracker=1")
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Echo.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


def test_a_fhir_call_sends_what_the_sessions_request_sends(base, monkeypatch):
    answered: list[int] = []
    monkeypatch.setattr(http, "RESPONSE_HOOKS", [lambda response: answered.append(200)])
    client = FhirClient(base, "token-1")
    assert client.get("Patient/1")["id"] == "1"
    assert client.create({"resourceType": "Patient"}, if_none_exist="identifier=s|1") == {
        "id": "1",
        "status": "201",
    }
    session = http.session_for(base)
    session.request("GET", f"{base}/Patient/1", headers=client.headers(), timeout=(5, 5))
    session.request(
        "POST",
        f"{base}/Patient",
        headers=client.headers() | {"If-None-Exist": "identifier=s|1"},
        data=orjson.dumps({"resourceType": "Patient"}),
        timeout=(5, 5),
    )
    sent_get, sent_post, requested_get, requested_post = Echo.seen
    assert sent_get == requested_get
    assert sent_post == requested_post
    headers = dict(sent_post[2])
    assert headers["Authorization"] == "Bearer token-1"
    assert headers["Accept"] == headers["Content-Type"] == "application/fhir+json"
    assert "Cookie" not in headers
    assert answered == [200] * 4  # the response hooks ran on every answer
    assert len(session.cookies) == 0  # the EHR's cookie was not kept
