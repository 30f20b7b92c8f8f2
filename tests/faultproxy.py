"""A fault-injecting HTTP reverse proxy for reliability tests (no mocks: real TCP).

Point the app at the proxy instead of the EHR; the proxy forwards every request to the
upstream (the sandbox, or any HTTP server) unless a fault programmed for it says otherwise:

    proxy = FaultProxy(sandbox_base_url)          # listens on 127.0.0.1, a free port
    fhir_base = f"{proxy.url}/fhir"               # what the app talks to
    proxy.add_fault(method="POST", path="/fhir", kind="drop_after_forward")
    ...                                           # the app's next POST /fhir... lands at the
    proxy.stats                                   # sandbox, but the app sees the connection cut
    proxy.close()                                 # or `with FaultProxy(...) as proxy:`

Faults apply to the NEXT `times` requests whose method matches (None: any) and whose path
(without query) starts with `path`; the first pending fault that matches is used, in the
order they were added. Kinds:

- `delay` (`seconds`): the request IS forwarded (so the upstream may commit while the client
  gives up) and the client waits. `stage="response"` (default) forwards at once and holds the
  response for `seconds`; `stage="request"` holds the request `seconds`, then forwards it
  (the client has usually timed out and gone by then: the write lands later, on its own).
- `status` (`status`, optional `retry_after`, `body`, `headers`): answered by the proxy
  WITHOUT forwarding; the default body is an OperationOutcome (code `transient`).
- `reset`: the connection is reset (TCP RST) once the request is read, without forwarding
  and without any response (requests raises ConnectionError).
- `drop_after_forward` (`cut_at`, default 10 bytes): forwarded, the upstream's whole answer
  is read (it has committed), then only the first `cut_at` bytes of its status line are sent
  and the connection is closed: the key "did it land?" case (ConnectionError for the client).
  Keep `cut_at` inside the status line (< 12): a cut after the status line's CRLF looks like a
  complete, header-less answer to Python's http.client.
- `cut_body` (`cut_at`, default 10 bytes): forwarded, the upstream's whole answer is read (it
  has committed), then its status line and headers (with the full `Content-Length`) and only
  the first `cut_at` bytes of its body are sent, and the connection is closed: the answer
  breaks off mid-body (requests raises ChunkedEncodingError, not ConnectionError).
- `garble` (`body`, default a truncated JSON text; `headers`): forwarded (the upstream
  commits); a 2xx answer reaches the client with its status and headers but `body` in place of
  its own (an unreadable success), each of `headers` replacing the upstream's (an empty value
  removes it, e.g. `{"Location": ""}`); any other answer is passed on unchanged.
- `blackhole` (`seconds`): the request is read, held `seconds`, then the connection is closed
  WITHOUT forwarding it: a client that timed out meanwhile cannot know that the upstream
  never saw it (the "no answer, and it never landed" case).
- `refuse` (`seconds`): takes effect at once, not on a request: the listening socket is
  closed for `seconds` (connections are refused, ECONNREFUSED), then opened again on the same
  port. `method`, `path` and `times` are ignored.

What is rewritten: the `Host` header (set to the upstream's, as nginx does), hop-by-hop
headers (`Connection`, `Keep-Alive`, `Transfer-Encoding`, ...), a chunked request body (sent
on with a Content-Length) and the response framing (always `Content-Length` and
`Connection: close`: one request per connection, no keep-alive). Nothing else: bodies and
`Location`/`Content-Location` headers keep the upstream's absolute URLs, so a sandbox's
`Location`, Bundle `fullUrl`s and paging links name the sandbox's own base, not the proxy.
A FHIR client that only takes ids (`ServiceRequest/<id>`) from them is fine; one that follows
absolute links would bypass the proxy. Only plain http upstreams are supported.

Thread-safe; bounded: every socket has a timeout, at most `max_connections` requests are in
flight (more are closed at once), and `close()` stops it all (idempotent).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

KINDS = (
    "delay",
    "status",
    "reset",
    "drop_after_forward",
    "cut_body",
    "garble",
    "blackhole",
    "refuse",
)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
MAX_BODY = 64 * 1024 * 1024
MAX_DELAY = 120.0


@dataclass
class Fault:
    """One programmed fault (see the module docstring for the kinds and their settings)."""

    kind: str
    method: str | None = None
    path: str = "/"
    times: int = 1
    seconds: float = 0.0
    status: int = 503
    retry_after: str | int | None = None
    body: bytes | str | dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stage: str = "response"
    cut_at: int = 10

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and path.startswith(
            self.path
        )


class FaultProxy:
    """A reverse proxy to `upstream` (e.g. "http://127.0.0.1:8800") on 127.0.0.1:`port`."""

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 30.0,
        upstream_timeout: float = 60.0,
        max_connections: int = 64,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_netloc = parts.netloc
        self.timeout = timeout
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._stats: Counter[str] = Counter()
        self._log: deque[dict[str, Any]] = deque(maxlen=500)
        self._closing = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._refuse_until = 0.0
        self._host = host
        self._listener: socket.socket | None = self._listen(host, port)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True
        )
        self._acceptor.start()

    # -- public API ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The proxy's base URL (no trailing slash): use it in place of the upstream's."""
        return f"http://{self._host}:{self.port}"

    def add_fault(
        self,
        kind: str,
        *,
        method: str | None = None,
        path: str = "/",
        times: int = 1,
        seconds: float = 0.0,
        status: int = 503,
        retry_after: str | int | None = None,
        body: bytes | str | dict | None = None,
        headers: dict[str, str] | None = None,
        stage: str = "response",
        cut_at: int = 10,
    ) -> Fault:
        """Program a fault for the next `times` matching requests (`refuse`: at once)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if not isinstance(times, int) or times < 1:
            raise ValueError("times must be a whole number >= 1")
        if kind in ("delay", "blackhole", "refuse") and not 0 < seconds <= MAX_DELAY:
            raise ValueError(f"{kind} needs 0 < seconds <= {MAX_DELAY}")
        if kind == "status" and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if stage not in ("request", "response"):
            raise ValueError("stage must be 'request' or 'response'")
        if cut_at < 0:
            raise ValueError("cut_at must be >= 0")
        fault = Fault(
            kind=kind,
            method=method,
            path=path,
            times=times,
            seconds=float(seconds),
            status=status,
            retry_after=retry_after,
            body=body,
            headers=dict(headers or {}),
            stage=stage,
            cut_at=cut_at,
        )
        if kind == "refuse":
            self.refuse(fault.seconds)
        else:
            with self._lock:
                self._faults.append(fault)
        return fault

    def refuse(self, seconds: float) -> None:
        """Refuse connections for `seconds` from now (the listening socket is closed)."""
        with self._lock:
            self._stats["refuse"] += 1
            self._refuse_until = time.monotonic() + seconds
            listener, self._listener = self._listener, None
        if listener is not None:
            _close_listener(listener)

    @property
    def refusing(self) -> bool:
        with self._lock:
            return self._listener is None and not self._closing.is_set()

    def clear_faults(self) -> None:
        """Drop every pending fault (a refusal in progress runs its course)."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Copies of the pending faults, in matching order."""
        with self._lock:
            return [Fault(**vars(f)) for f in self._faults]

    @property
    def stats(self) -> dict[str, int]:
        """Counts: `requests` received, `forwarded` upstream, `passed` (no fault), `errors`
        (upstream unreachable: 502), and one per fault kind applied (`refuse`: activations)."""
        with self._lock:
            out = {"requests": 0, "forwarded": 0, "passed": 0, "errors": 0}
            out.update({kind: 0 for kind in KINDS})
            out.update(self._stats)
            return out

    @property
    def log(self) -> list[dict[str, Any]]:
        """The last 500 requests: method, path (with query), fault kind (None), status sent."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            self._log.clear()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being handled (e.g. a delayed one has been forwarded)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        """Stop listening, cut every open connection and wait (boundedly) for the threads."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._lock:
            listener, self._listener = self._listener, None
            active = list(self._active)
            threads = list(self._threads)
        if listener is not None:
            _close_listener(listener)
        for sock in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        deadline = time.monotonic() + 5
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _listen(host: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        return sock

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                listener = self._listener
                until = self._refuse_until
            if listener is None:
                remaining = until - time.monotonic()
                if remaining > 0:
                    self._closing.wait(min(remaining, 0.05))
                    continue
                reopened = self._reopen()
                if reopened is None:
                    self._closing.wait(0.05)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], 0.1)
                if not ready:
                    continue
                conn, _addr = listener.accept()
            except (OSError, ValueError):
                continue  # closed under us (refuse or close): loop and look again
            if not self._slots.acquire(timeout=1):
                conn.close()
                continue
            thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"faultproxy-{self.port}-conn", daemon=True
            )
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _reopen(self) -> socket.socket | None:
        with self._lock:
            if self._closing.is_set() or self._listener is not None:
                return self._listener
            try:
                self._listener = self._listen(self._host, self.port)
            except OSError:
                return None
            return self._listener

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._active.add(conn)
        handler: _Handler | None = None
        try:
            conn.settimeout(self.timeout)
            handler = _Handler(conn, conn.getpeername(), self)
        except Exception:
            handler = None  # a broken client connection must not kill the proxy
        finally:
            try:
                if handler is not None and handler.abort:
                    # SO_LINGER 0: close() sends a RST instead of a FIN.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif handler is not None and handler.half_close:
                    conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()
            with self._lock:
                self._active.discard(conn)
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return Fault(**{**vars(fault), "times": 1})
        return None

    def _begin(self, method: str, target: str) -> dict[str, Any]:
        entry = {"method": method, "path": target, "fault": None, "status": None}
        with self._lock:
            self._stats["requests"] += 1
            self._in_flight += 1
            self._log.append(entry)
        return entry

    def _end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _note(self, entry: dict[str, Any], **values: Any) -> None:
        with self._lock:
            entry.update(values)

    def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
        """Send the request upstream; (status, reason, headers, body), or None if unreachable."""
        out = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() != "host"]
        out.append(("Host", self.upstream_netloc))
        out.append(("Connection", "close"))
        if body or method in ("POST", "PUT", "PATCH"):
            out = [(k, v) for k, v in out if k.lower() != "content-length"]
            out.append(("Content-Length", str(len(body))))
        upstream = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=self.upstream_timeout
        )
        try:
            upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for key, value in out:
                upstream.putheader(key, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            data = response.read(MAX_BODY + 1)
            if len(data) > MAX_BODY:
                raise OSError("upstream response too large")
            self._count("forwarded")
            return response.status, response.reason, response.getheaders(), data
        except (OSError, http.client.HTTPException):
            return None
        finally:
            upstream.close()


class _Handler(BaseHTTPRequestHandler):
    """One client connection: read the request, apply a fault or forward it."""

    protocol_version = "HTTP/1.1"
    server: FaultProxy  # type: ignore[assignment]

    def __init__(self, request: socket.socket, address: Any, proxy: FaultProxy) -> None:
        self.abort = False
        self.half_close = False
        self.proxy = proxy
        super().__init__(request, address, proxy)  # type: ignore[arg-type]

    def log_message(self, *_args: Any) -> None:
        return None

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def __getattr__(self, name: str) -> Any:
        # do_GET, do_POST, ... any method is proxied the same way.
        if name.startswith("do_"):
            return self._proxy
        raise AttributeError(name)

    def _delayed(self, fault: Fault | None, stage: str) -> bool:
        """Hold a `delay` fault at this stage; True if the proxy closed meanwhile."""
        if fault is None or fault.kind != "delay" or fault.stage != stage:
            return False
        return self.proxy._closing.wait(fault.seconds)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size_total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise OSError("connection closed inside a chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size_total += size
                if size_total > MAX_BODY:
                    raise OSError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise OSError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        body: bytes,
        cut_body_at: int | None = None,
    ) -> None:
        """Send an answer; `cut_body_at` sends only that many bytes of the body (the
        Content-Length still announces all of it)."""
        lines = [f"HTTP/1.1 {status} {reason}"]
        head_only = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        for key, value in headers:
            low = key.lower()
            if low in HOP_BY_HOP or (low == "content-length" and not head_only):
                continue
            lines.append(f"{key}: {value}")
        if not head_only:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        sent = body if cut_body_at is None else body[: min(cut_body_at, max(len(body) - 1, 0))]
        self.wfile.write(payload + (b"" if head_only else sent))

    def _proxy(self) -> None:
        proxy = self.proxy
        method, target = self.command, self.path
        path = urlsplit(target).path or "/"
        entry = proxy._begin(method, target)
        try:
            body = self._read_body()
            fault = proxy._take_fault(method, path)
            if fault is not None:
                proxy._count(fault.kind)
                proxy._note(entry, fault=fault.kind)
            if fault is not None and fault.kind == "reset":
                self.abort = True
                return
            if fault is not None and fault.kind == "blackhole":
                proxy._closing.wait(fault.seconds)
                self.abort = True
                return
            if fault is not None and fault.kind == "status":
                status, reason, headers, data = _status_answer(fault)
                proxy._note(entry, status=status)
                self._send(status, reason, headers, data)
                return
            if self._delayed(fault, "request"):
                return  # the proxy is closing
            forwarded = proxy._forward(method, target, self.headers.items(), body)
            if forwarded is None:
                proxy._count("errors")
                status, reason, headers, data = _status_answer(
                    Fault(kind="status", status=502, body=_outcome(502, "upstream unreachable"))
                )
                proxy._note(entry, status=502)
                self._send(status, reason, headers, data)
                return
            status, reason, headers, data = forwarded
            if fault is None:
                proxy._count("passed")
            proxy._note(entry, status=status)
            if fault is not None and fault.kind == "drop_after_forward":
                raw = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
                self.wfile.write(raw[: fault.cut_at])
                self.half_close = True
                return
            if fault is not None and fault.kind == "cut_body":
                self._send(status, reason, headers, data, cut_body_at=fault.cut_at)
                self.half_close = True
                return
            if fault is not None and fault.kind == "garble" and 200 <= status < 300:
                data = _garbled(fault.body)
                replaced = {"content-encoding", *(k.lower() for k in fault.headers)}
                headers = [(k, v) for k, v in headers if k.lower() not in replaced]
                headers += [(k, v) for k, v in fault.headers.items() if v]
            if self._delayed(fault, "response"):
                return  # the proxy is closing
            self._send(status, reason, headers, data)
        except OSError:
            self.abort = True  # the client went away or sent garbage
        finally:
            proxy._end()


def _close_listener(listener: socket.socket) -> None:
    """Stop listening now: shutdown wakes a thread blocked on it and drops the backlog, so
    new connections are refused at once (a bare close waits for that thread to let go)."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def _outcome(status: int, text: str) -> dict:
    code = "transient" if status in (408, 429) or status >= 500 else "processing"
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": f"fault proxy: {text}"}],
    }


def _garbled(body: bytes | str | dict | None) -> bytes:
    """The unreadable body a `garble` fault sends in place of a 2xx answer's own."""
    if body is None:
        return b'{"resourceType": "Bundle", "type": "transaction-resp'
    if isinstance(body, dict):
        return json.dumps(body).encode()
    return body.encode() if isinstance(body, str) else body


def _status_answer(fault: Fault) -> tuple[int, str, list[tuple[str, str]], bytes]:
    try:
        reason = http.client.responses[fault.status]
    except KeyError:
        reason = "Status"
    body = fault.body
    if body is None:
        body = _outcome(fault.status, f"injected {fault.status} {reason}")
    content_type = "application/fhir+json; charset=utf-8"
    if isinstance(body, dict):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
        content_type = "text/plain; charset=utf-8"
    else:
        data = body
        content_type = "application/octet-stream"
    headers = [("Content-Type", content_type)]
    if fault.retry_after is not None:
        headers.append(("Retry-After", str(fault.retry_after)))
    headers.extend(fault.headers.items())
    return fault.status, reason, headers, data
