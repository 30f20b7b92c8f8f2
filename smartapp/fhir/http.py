"""HTTP to the EHRs: one `requests.Session` per EHR origin, shared by every thread of the
process, so FHIR and OAuth calls reuse kept-alive connections (a launch and Sign made a new TCP
connection per call before: a visible part of Handoff's CPU per flow, benchmarks/load.py).

The sessions keep no cookies (an EHR's cookie must never follow one patient's call into
another's) and read the proxy and CA settings of the environment once, when made (requests
would re-read the whole environment on every call). `RESPONSE_HOOKS` are called with every
answer (smartapp.ops times them for the metrics). A forked process (gunicorn with
--preload) makes its own sessions: sockets are never shared across processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

#: Connections kept open per EHR origin (more may open under load; only this many are kept).
POOL_SIZE = 32
#: A kept-alive connection idle longer than this (seconds) is not reused but opened again:
#: under the shortest keep-alive of common servers (gunicorn's default, 2 s).
IDLE_SECONDS = 1.0
#: Called with each response from an EHR (must never raise into the caller).
RESPONSE_HOOKS: list[Callable[[requests.Response], Any]] = []

S = TypeVar("S", bound=requests.Session)

_sessions: dict[str, requests.Session] = {}
_lock = threading.Lock()
_owner = [os.getpid()]


def origin(url: str) -> str:
    """scheme://host[:port] of an URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def session_for(url: str) -> requests.Session:
    """The shared session for the EHR `url` belongs to (made on first use)."""
    key = origin(url)
    with _lock:
        if _owner[0] != os.getpid():  # forked: the parent's sockets are not ours
            _sessions.clear()
            _owner[0] = os.getpid()
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = _new_session(key)
        return session


class _FreshPool(HTTPConnectionPool):
    """A pool that does not reuse a connection idle for longer than IDLE_SECONDS: servers close
    idle keep-alive connections (gunicorn after 2 s, Apache 5 s, nginx 75 s), and one closed
    just as a request goes out fails it (a POST cannot be retried: it may have landed)."""

    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "handoff_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > IDLE_SECONDS:
            conn.close()  # urllib3 connects it again on use
        return conn

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        if conn is not None:
            conn.handoff_idle_since = time.monotonic()  # type: ignore[attr-defined]
        super()._put_conn(conn)


class _FreshHTTPSPool(_FreshPool, HTTPSConnectionPool):
    """The same for https."""


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _FreshPool, "https": _FreshHTTPSPool}


def fresh_adapter(pool_maxsize: int = POOL_SIZE) -> HTTPAdapter:
    """A requests adapter whose pools reopen a connection idle over IDLE_SECONDS."""
    return _Adapter(pool_connections=1, pool_maxsize=pool_maxsize)


def _new_session(key: str) -> requests.Session:
    session = requests.Session()
    adapter = fresh_adapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    # The environment read once (proxies honouring NO_PROXY for this origin, the CA bundle).
    session.trust_env = False
    session.proxies = get_environ_proxies(key)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.hooks["response"] = [_run_hooks]
    return session


def send(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    data: bytes | None = None,
    timeout: tuple[float, float],
    stream: bool = False,
) -> requests.Response:
    """`session_for(url).request(method, url, ...)`, without the per-call merging of the
    session's settings with the environment's and the request's (a third of a FHIR call's
    CPU): the request is prepared from what those merges give for these sessions, and sent
    as `request` sends it. The session's headers with `headers` over them; its response
    hooks; no cookies (the session keeps none: its policy refuses every cookie); its proxies
    and CA bundle as read when it was made (`trust_env` off: nothing else is read); redirects
    followed, as `request` follows them."""
    session = session_for(url)
    merged = CaseInsensitiveDict(session.headers)
    merged.update(headers)
    prepared = requests.PreparedRequest()
    prepared.prepare(
        method=method.upper(), url=url, headers=merged, data=data or {}, hooks=session.hooks
    )
    return session.send(
        prepared,
        timeout=timeout,
        allow_redirects=True,
        proxies={k: v for k, v in session.proxies.items() if v is not None},
        stream=stream,
        verify=session.verify,
        cert=session.cert,
    )


def _run_hooks(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    for hook in RESPONSE_HOOKS:
        with contextlib.suppress(Exception):  # a metric must never break a call to the EHR
            hook(response)
    return response


def adopt(session: S, url: str) -> S:
    """`session` (e.g. authlib's OAuth2Session for one token request) sends what it sends to
    `url`'s origin over that EHR's shared connections, with the response hooks."""
    key = origin(url)
    shared = session_for(url)
    session.mount(f"{key}/", shared.get_adapter(key))
    # the environment as the shared session read it once (not per request: proxies, CA bundle)
    session.trust_env = False
    session.proxies = dict(shared.proxies)
    session.verify = shared.verify
    session.hooks["response"] = [*session.hooks.get("response", []), _run_hooks]
    return session


def close_all() -> None:
    """Close every session (tests; a process about to exit)."""
    with _lock:
        for session in _sessions.values():
            session.close()
        _sessions.clear()
