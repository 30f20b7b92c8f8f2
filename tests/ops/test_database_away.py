"""/readyz with the database away (issue 15 item 5): Handoff on PostgreSQL through a TCP
relay the test cuts (as a database restart or a network partition would); /readyz answers 503
naming the database while /healthz stays 200, and is ready again once the database is back."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import create_engine, make_url, text

from smartapp.web.serving import reserve_port
from tests.conftest import start_app, write_registration


class Relay:
    """A TCP relay from a local port to the database; `cut()` closes every connection and
    stops listening, `restore()` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = reserve_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._sockets.clear()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    base = os.environ.get("HANDOFF_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("HANDOFF_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    schema = f"ops_{secrets.token_hex(4)}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield schema
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def ready(url: str, tries: int = 3) -> requests.Response:
    """/readyz, asked again while it is not ready (a pooled connection the cut killed is
    found dead on its first use, and the pool is renewed)."""
    for _ in range(tries):
        answer = requests.get(f"{url}/readyz", timeout=20)
        if answer.status_code == 200:
            break
        time.sleep(0.2)
    return answer


def test_readyz_names_the_database_when_it_is_away(tmp_path, pg_schema) -> None:
    base = make_url(os.environ["HANDOFF_TEST_POSTGRES_URL"])
    relay = Relay((base.host or "127.0.0.1", base.port or 5432))
    url = base.set(host="127.0.0.1", port=relay.port).update_query_dict(
        {"options": f"-csearch_path={pg_schema}", "connect_timeout": "3"}
    )
    launch_dir = write_registration(tmp_path / "launch", "http://127.0.0.1:9")
    port = reserve_port()
    app = start_app(
        tmp_path / "app",
        port,
        launch_dir,
        DATABASE_URL=url.render_as_string(hide_password=False),
    )
    handoff = f"http://127.0.0.1:{port}"
    try:
        assert ready(handoff).status_code == 200
        relay.cut()
        away = requests.get(f"{handoff}/readyz", timeout=20)
        assert away.status_code == 503
        body = away.json()
        assert body["failed"][0] == "database"
        database = next(c for c in body["checks"] if c["name"] == "database")
        assert database["ok"] is False and "not reachable" in database["detail"]
        assert requests.get(f"{handoff}/healthz", timeout=10).status_code == 200
        relay.restore()
        back = ready(handoff)
        assert back.status_code == 200, back.text
    finally:
        app.stop()
        relay.cut()
