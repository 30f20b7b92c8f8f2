"""An EHR + Handoff stack for the coach worklist tests (issue 11), its own so that no other
test's coach has touched its handoffs, and coaches in it over real HTTP: a server-side staff
session put in the signed session cookie, as the sign-in callback does (the OpenID Connect
sign-in itself is tested in tests/e2e/test_staff_pages.py; a second app signing staff in
through another identity provider in the same process would share authlib's client registry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import requests

from smartapp.db import Database
from tests.stacks import Stack, start_stack
from tests.supervisor.staff_http import CSRF, as_staff

NAMES = {
    "demo-coach-1": "Jordan Rivera, CPRS",
    "demo-coach-2": "Sam Lee, CPRS",
    "demo-auditor": "Morgan Ellis",
}


def start_worklist_stack(folder: Path, shared_dir: Path, **app_config) -> Stack:
    """Sandbox (scenarios, test controls, profile fhir-rest) and Handoff in front of it."""
    return start_stack(folder, shared_dir, **app_config)


def staff(stack: Stack, user_id: str, roles: tuple[str, ...] = ("coach",)) -> dict:
    """The staff member the sandbox's sign-in would give: its Practitioner as fhirUser."""
    return {
        "sub": user_id,
        "name": NAMES[user_id],
        "user_ref": f"{stack.ehr_url}/fhir/Practitioner/{user_id}",
        "roles": list(roles),
    }


@dataclass
class StaffSession:
    """A signed-in staff browser (requests) and its CSRF token."""

    http: requests.Session
    app_url: str
    csrf: str = CSRF

    def page(self, path: str = "/worklist/") -> str:
        answer = self.http.get(f"{self.app_url}{path}", timeout=20)
        answer.raise_for_status()
        return answer.text

    def post(self, path: str, csrf: bool = True, **form) -> requests.Response:
        """A form post (the CSRF token unless `csrf=False`); redirects are not followed."""
        data = ({"csrf_token": self.csrf} if csrf else {}) | form
        return self.http.post(f"{self.app_url}{path}", data=data, allow_redirects=False, timeout=30)

    def flash(self) -> str:
        """The messages the worklist shows after the last post."""
        return " ".join(re.findall(r'class="flash flash-\w+" role="status">([^<]*)<', self.page()))


def coach_session(stack: Stack, user_id: str, roles: tuple[str, ...] = ("coach",)) -> StaffSession:
    """`user_id` signed in to Handoff (a live server-side staff session)."""
    http = as_staff(stack.app.app, stack.app.url, staff(stack, user_id, roles))
    return StaffSession(http, stack.app.url)


def browser_cookies(stack: Stack, user_id: str) -> list[dict]:
    """The same signed-in session as cookies for a Playwright browser context."""
    session = coach_session(stack, user_id)
    return [
        {"name": c.name, "value": c.value or "", "domain": "127.0.0.1", "path": "/"}
        for c in session.http.cookies
    ]


def handoff_db(stack: Stack) -> Database:
    return Database(stack.database_url)
