"""The request id: taken from the caller's X-Request-Id when it is well formed (a proxy or the
EHR may have made one), else a new random one; kept for the request's log lines (a context
variable the JSON formatter reads) and sent back as X-Request-Id."""

from __future__ import annotations

import re
import secrets

from flask import Flask, Response, g, request

from smartapp.web.logs import current_request_id as current

HEADER = "X-Request-Id"
#: What is accepted from a caller: short, no spaces or quotes (it goes into every log line).
WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{8,128}")


def request_id() -> str | None:
    """This request's id (None outside a request)."""
    return current.get()


def _take() -> None:
    sent = request.headers.get(HEADER, "")
    rid = sent if WELL_FORMED.fullmatch(sent) else secrets.token_hex(16)
    g.request_id = rid
    g.request_id_token = current.set(rid)


def _drop(_exc: BaseException | None) -> None:
    """The request is over: this thread's later lines are no longer its own (a test client
    runs requests in the caller's thread; a server thread serves the next request)."""
    token = g.pop("request_id_token", None)
    if token is not None:
        current.reset(token)


def _give(response: Response) -> Response:
    rid = g.get("request_id")
    if rid:
        response.headers[HEADER] = rid
    return response


def install(app: Flask) -> None:
    """Take the id first thing in every request; send it back on every response."""
    app.before_request_funcs.setdefault(None, []).insert(0, _take)
    app.after_request(_give)
    app.teardown_request(_drop)
