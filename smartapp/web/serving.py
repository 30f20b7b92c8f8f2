"""Run a WSGI app on a real local port in a background thread (demo command and tests)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from werkzeug.serving import BaseWSGIServer, make_server


@dataclass
class ServerHandle:
    """A running server: its base URL and a way to stop it."""

    server: BaseWSGIServer
    thread: threading.Thread = field(repr=False)

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def url(self) -> str:
        host = self.server.server_address[0]  # typed str | bytes; a TCP server's is a str
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def reserve_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free port (for apps that must know their URL before they start)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """Serve `app` with a threaded werkzeug server; port 0 picks a free port."""
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"wsgi-{port}", daemon=True)
    thread.start()
    return ServerHandle(server=server, thread=thread)
