"""An EHR + Handoff stack for the coach worklist tests (issue 11), its own so that no other
test's coach has touched its handoffs: the sandbox is also the staff identity provider (demo
coaches sign in there), and `coach_session` signs a `requests` session in over real HTTP."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import requests

from smartapp.db import Database
from smartapp.web.serving import reserve_port, serve_in_thread
from tests.conftest import STAFF_SECRET, TEST_READER, TEST_READER_REDIRECT, start_app
from tests.conftest import write_registration as registration
from tests.stacks import Stack

STAFF_CLIENT = "handoff-staff"


def start_worklist_stack(folder: Path, shared_dir: Path, **app_config) -> Stack:
    """Sandbox (scenarios, test controls, the staff client) and Handoff signing coaches in
    with it."""
    from smartapp.sandbox import SandboxClient, create_sandbox_app

    folder.mkdir(parents=True, exist_ok=True)
    ehr_port, app_port = reserve_port(), reserve_port()
    ehr_url, app_url = f"http://127.0.0.1:{ehr_port}", f"http://127.0.0.1:{app_port}"
    ehr_app = create_sandbox_app(
        base_url=ehr_url,
        database_url=f"sqlite:///{folder / 'sandbox.sqlite'}",
        clients=[
            SandboxClient("handoff-test", [f"{app_url}/callback"], f"{app_url}/launch"),
            SandboxClient(TEST_READER, [TEST_READER_REDIRECT], "http://127.0.0.1:9/launch"),
            SandboxClient(
                client_id=STAFF_CLIENT,
                redirect_uris=[f"{app_url}/staff/callback"],
                launch_url=f"{app_url}/",
                name="Handoff staff pages",
                auth_method="client_secret_basic",
                client_secret=STAFF_SECRET,
            ),
        ],
        shared_dir=shared_dir,
        seed=("scenarios",),
        test_controls=True,
    )
    ehr = serve_in_thread(ehr_app, "127.0.0.1", ehr_port)
    launch_dir = registration(folder / "launch", ehr_url, client_id="handoff-test")
    database_url = f"sqlite:///{folder / 'handoff.sqlite'}"
    app = start_app(
        folder / "app",
        app_port,
        launch_dir,
        DATABASE_URL=database_url,
        STAFF_OIDC_ISSUER=f"{ehr_url}/fhir",
        STAFF_OIDC_CLIENT_ID=STAFF_CLIENT,
        STAFF_OIDC_CLIENT_SECRET=STAFF_SECRET,
        **app_config,
    )
    return Stack(
        ehr=ehr,
        app=app,
        ehr_url=ehr_url,
        proxy=None,
        app_port=app_port,
        launch_dir=launch_dir,
        database_url=database_url,
    )


@dataclass
class StaffSession:
    """A signed-in staff browser (requests) and the CSRF token of its last page."""

    http: requests.Session
    app_url: str
    csrf: str = ""

    def page(self, path: str = "/worklist/") -> str:
        answer = self.http.get(f"{self.app_url}{path}", timeout=20)
        answer.raise_for_status()
        found = re.search(r'name="csrf_token" value="([^"]+)"', answer.text)
        if found:
            self.csrf = found.group(1)
        return answer.text

    def post(self, path: str, csrf: bool = True, **form) -> requests.Response:
        """A form post (the CSRF token unless `csrf=False`); redirects are not followed."""
        data = ({"csrf_token": self.csrf} if csrf else {}) | form
        return self.http.post(f"{self.app_url}{path}", data=data, allow_redirects=False, timeout=30)

    def flash(self) -> str:
        """The messages the worklist shows after the last post."""
        return " ".join(re.findall(r'class="flash flash-\w+" role="status">([^<]*)<', self.page()))


def coach_session(app_url: str, user_id: str) -> StaffSession:
    """Sign in at the sandbox as the demo user `user_id`, over HTTP, as a browser would."""
    http = requests.Session()
    login = http.get(f"{app_url}/worklist/", timeout=20)  # -> the sandbox's sign-in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    following = re.search(r'name="next" value="([^"]*)"', login.text)
    action = re.search(r'<form method="post" action="([^"]+)" id="sign-in-form"', login.text)
    assert token and following and action, login.text[:500]
    origin = re.match(r"https?://[^/]+", login.url)
    assert origin
    target = action.group(1).replace("&amp;", "&")
    answer = http.post(
        target if target.startswith("http") else origin.group(0) + target,
        data={
            "csrf_token": token.group(1),
            "next": html.unescape(following.group(1)),
            "user": user_id,
        },
        timeout=20,
    )
    assert answer.url.startswith(f"{app_url}/worklist/"), answer.url
    session = StaffSession(http, app_url)
    session.page()
    return session


def handoff_db(stack: Stack) -> Database:
    return Database(stack.database_url)
