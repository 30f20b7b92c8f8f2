"""Fixtures: a sandbox EHR on a real local port, and an HTTP-only SMART client for it.

Tests talk to the sandbox only over HTTP with `requests`, as Handoff does.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

from smartapp.sandbox import SandboxClient, create_sandbox_app
from smartapp.web.serving import ServerHandle, reserve_port, serve_in_thread
from tests.shared import SHARED_DIR

#: The sandbox tests pin search counts over a fixed set of charts: the first 16 labelled
#: scenarios (P01-P16). The shared folder has grown since (29 charts under clinical rules v2);
#: the app and engine tests use all of them.
PINNED_SCENARIOS = tuple(f"P{n:02d}-" for n in range(1, 17))


@functools.cache
def pinned_shared_dir() -> Path:
    """A shared folder with only the pinned scenarios (symlinked) and all of Synthea."""
    folder = Path(tempfile.mkdtemp(prefix="handoff-sandbox-shared-"))
    (folder / "scenarios").mkdir()
    for chart in sorted((SHARED_DIR / "scenarios").glob("P*.json")):
        if chart.name.startswith(PINNED_SCENARIOS):
            (folder / "scenarios" / chart.name).symlink_to(chart)
    (folder / "synthea").symlink_to(SHARED_DIR / "synthea")
    return folder


SHARED = SHARED_DIR
#: The fixed "now" most tests run at: 55 days 18.5 hours after the scenarios' own now.
NOW = datetime(2027, 1, 15, 9, 30, tzinfo=UTC)
CLIENT_ID = "handoff-test"
CONFIDENTIAL_ID = "handoff-confidential"
CONFIDENTIAL_SECRET = "s3cret-for-tests"
APP_ORIGIN = "http://127.0.0.1:9"  # nothing listens there: tests stop at the redirect
REDIRECT_URI = f"{APP_ORIGIN}/callback"
LAUNCH_URL = f"{APP_ORIGIN}/launch"
FHIR_JSON = "application/fhir+json"


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Launched:
    """An EHR launch as the app receives it: iss and launch from the iframe src."""

    iss: str
    launch: str
    frame_src: str
    tab_href: str


@dataclass
class RunningSandbox:
    """A sandbox served in a thread, plus a browser-like session signed in to it."""

    base: str
    app: Flask
    handle: ServerHandle
    browser: requests.Session = field(default_factory=requests.Session)

    @property
    def fhir(self) -> str:
        return f"{self.base}/fhir"

    def smart_config(self) -> dict:
        return requests.get(f"{self.fhir}/.well-known/smart-configuration", timeout=10).json()

    def launch(self, patient_id: str, app: str | None = None) -> Launched:
        """Open the ED list (signs in) and the chart; read the iframe's EHR launch."""
        assert self.browser.get(f"{self.base}/", timeout=10).status_code == 200
        params = {"app": app} if app else {}
        page = self.browser.get(f"{self.base}/chart/{patient_id}", params=params, timeout=10)
        assert page.status_code == 200, page.text
        frame = re.search(
            r'<iframe id="handoff-frame" name="handoff-frame" src="([^"]+)"', page.text
        )
        tab = re.search(r'id="open-in-tab"[^>]*href="([^"]+)"', page.text)
        assert frame and tab, page.text
        src = html.unescape(frame.group(1))
        query = parse_qs(urlsplit(src).query)
        return Launched(query["iss"][0], query["launch"][0], src, html.unescape(tab.group(1)))

    def authorize(self, **params: str) -> requests.Response:
        """GET /auth/authorize in the signed-in browser, without following redirects."""
        return self.browser.get(
            self.smart_config()["authorization_endpoint"],
            params=params,
            allow_redirects=False,
            timeout=10,
        )

    def authorize_params(
        self, launched: Launched, scope: str, challenge: str, **extra: str
    ) -> dict:
        params = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": secrets.token_urlsafe(8),
            "aud": launched.iss,
            "launch": launched.launch,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        params.update(extra)
        return params

    @property
    def token_url(self) -> str:
        return f"{self.base}/auth/token"

    def exchange(self, code: str, verifier: str) -> requests.Response:
        return requests.post(
            self.token_url,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": CLIENT_ID,
                "code_verifier": verifier,
            },
            timeout=10,
        )

    def code(
        self, patient_id: str, scope: str, client_id: str = CLIENT_ID, **extra: str
    ) -> tuple[str, str]:
        """EHR launch of `client_id` up to the code: (code, PKCE verifier)."""
        launched = self.launch(patient_id, app=None if client_id == CLIENT_ID else client_id)
        verifier, challenge = pkce_pair()
        params = self.authorize_params(launched, scope, challenge, client_id=client_id, **extra)
        response = self.authorize(**params)
        assert response.status_code == 302, response.text
        location = parse_qs(urlsplit(response.headers["Location"]).query)
        assert "code" in location, response.headers["Location"]
        return location["code"][0], verifier

    def token(self, patient_id: str, scope: str, **extra: str) -> dict:
        """The whole EHR launch: chart -> authorize -> code -> token response."""
        code, verifier = self.code(patient_id, scope, **extra)
        token = self.exchange(code, verifier)
        assert token.status_code == 200, token.text
        return token.json()

    def api(self, token: dict | str) -> requests.Session:
        """A requests session sending the bearer token and FHIR JSON headers."""
        session = requests.Session()
        access = token if isinstance(token, str) else token["access_token"]
        session.headers.update(
            {"Authorization": f"Bearer {access}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        )
        return session


def start_sandbox(
    tmp: Path,
    seed: tuple[str, ...] = ("scenarios",),
    now: datetime | None = NOW,
    extra_clients: tuple[SandboxClient, ...] = (),
    test_controls: bool = False,
    write_behaviour: str = "fhir-rest",
) -> RunningSandbox:
    """Build and serve a sandbox on a free port (its base URL is known before it starts)."""
    port = reserve_port()
    base = f"http://127.0.0.1:{port}"
    app = create_sandbox_app(
        base_url=base,
        database_url=f"sqlite:///{tmp / 'sandbox.sqlite'}",
        clients=[
            SandboxClient(CLIENT_ID, [REDIRECT_URI], LAUNCH_URL, name="Handoff (test)"),
            SandboxClient(
                CONFIDENTIAL_ID,
                [REDIRECT_URI],
                LAUNCH_URL,
                name="Handoff (confidential)",
                auth_method="client_secret_basic",
                client_secret=CONFIDENTIAL_SECRET,
            ),
            *extra_clients,
        ],
        shared_dir=pinned_shared_dir(),
        seed=seed,
        now=now,
        test_controls=test_controls,
        write_behaviour=write_behaviour,
    )
    handle = serve_in_thread(app, port=port)
    return RunningSandbox(base=base, app=app, handle=handle)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """A scenarios-only sandbox at NOW, shared by the tests of one module."""
    running = start_sandbox(tmp_path_factory.mktemp("sandbox"))
    yield running
    running.handle.stop()


@pytest.fixture(scope="module")
def user_api(sandbox: RunningSandbox) -> requests.Session:
    """API session with user-level read/write to everything (the physician's view)."""
    return sandbox.api(sandbox.token("P01-pt", "launch openid fhirUser user/*.cruds"))


@pytest.fixture(scope="module")
def p01_api(sandbox: RunningSandbox) -> requests.Session:
    """API session confined to P01's compartment: reads plus ServiceRequest/DocumentReference
    /Task/Provenance creation, like Handoff asks for."""
    scope = (
        "launch openid fhirUser patient/*.rs patient/ServiceRequest.c "
        "patient/DocumentReference.c patient/Task.c patient/Provenance.c"
    )
    return sandbox.api(sandbox.token("P01-pt", scope))
