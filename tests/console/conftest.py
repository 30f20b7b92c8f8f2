"""An app with a temp SQLite log filled with realistic events, and signed-in staff clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from smartapp import create_app
from smartapp.audit import chain
from smartapp.services import current_services
from tests.console import logdata
from tests.staff_login import STAFF_KEY, staff_session_token

STAFF = {
    "auditor": {
        "sub": "ann",
        "name": "Ann Auditor",
        "user_ref": logdata.AUDITOR,
        "roles": ["auditor"],
    },
    "program-manager": {
        "sub": "pat",
        "name": "Pat Manager",
        "user_ref": "urn:staff:pat",
        "roles": ["program-manager"],
    },
    "coach": {"sub": "cal", "name": "Cal Coach", "user_ref": logdata.COACH, "roles": ["coach"]},
}


def make_app(folder: Path, **config) -> Flask:
    """Handoff with its own SQLite file and instance folder."""
    return create_app(
        {
            "TESTING": True,
            "DEMO": True,  # keys beside the data in one temp folder: allowed in the demo only
            "SECRET_KEY": "console-tests",
            "DATABASE_URL": f"sqlite:///{folder / 'handoff.sqlite'}",
            "PUBLIC_URL": "http://127.0.0.1:8700",
            **config,
        },
        instance_path=str(folder),
    )


@pytest.fixture
def clock(monkeypatch) -> logdata.Clock:
    """The chain's clock, so events land on the fixture's dates."""
    found = logdata.Clock()
    monkeypatch.setattr(chain, "utcnow", found)
    return found


@pytest.fixture
def app(tmp_path: Path, clock: logdata.Clock) -> Iterator[Flask]:
    app = make_app(tmp_path / "instance")
    with app.app_context():
        logdata.fill(current_services().db, clock)
    yield app
    current_services_of(app).db.engine.dispose()


def current_services_of(app: Flask):
    with app.app_context():
        return current_services()


@pytest.fixture
def client_as(app: Flask) -> Callable[[str | None], FlaskClient]:
    """A test client signed in with a role (None: no staff session)."""

    def make(role: str | None) -> FlaskClient:
        client = app.test_client()
        if role is not None:
            with client.session_transaction() as session:
                session[STAFF_KEY] = staff_session_token(app, STAFF[role])
        return client

    return make


@pytest.fixture
def auditor(client_as) -> FlaskClient:
    return client_as("auditor")


@pytest.fixture
def manager(client_as) -> FlaskClient:
    return client_as("program-manager")
