"""Shared by the aids' HTTP and browser tests: a launch as a browser, the aid forms' fields,
what Handoff recorded (its own database), and what the EHR holds."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import requests
from sqlalchemy import select

from smartapp.audit.models import LogEvent
from smartapp.db import Database, LaunchContext
from tests import launch_flow

COWS_CODE = ("urn:handoff:flowsheet", "cows-total")
#: One answer per item totalling 14 (moderate): pulse 2, sweating 2, restlessness 3, pupils 2,
#: aches 2, nose 1, GI 2, tremor 0, yawning 0, anxiety 0, gooseflesh 0.
COWS_14 = {
    "pulse": 2, "sweating": 2, "restlessness": 3, "pupils": 2, "aches": 2, "nose": 1,
    "gi": 2, "tremor": 0, "yawning": 0, "anxiety": 0, "gooseflesh": 0,
}  # fmt: skip


@dataclass
class Screen:
    """One launch's screen, as the browser that launched it holds it."""

    browser: requests.Session
    app_url: str
    context_id: str
    page: str
    launch: launch_flow.Launch

    @property
    def csrf(self) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', self.page).group(1)

    def url(self, path: str = "") -> str:
        return f"{self.app_url}/c/{self.context_id}{path}"

    def post(self, path: str, form: dict | list, browser: requests.Session | None = None):
        return (browser or self.browser).post(
            self.url(path), data=form, allow_redirects=False, timeout=30
        )

    def reload(self) -> str:
        answer = self.browser.get(self.url(), timeout=30)
        assert answer.status_code == 200, answer.text[:300]
        self.page = answer.text
        return self.page


def open_screen(stack, patient_id: str) -> Screen:
    launch = launch_flow.full(f"http://127.0.0.1:{stack.app_port}", stack.ehr_url, patient_id)
    assert launch.final.status_code == 200, launch.final.text[:300]
    return Screen(
        browser=launch.browser,
        app_url=f"http://127.0.0.1:{stack.app_port}",
        context_id=launch.final.url.rsplit("/", 1)[1].split("#")[0],
        page=launch.final.text,
        launch=launch,
    )


def cows_form(screen: Screen, scores: dict[str, int]) -> dict[str, str]:
    return {"csrf_token": screen.csrf} | {f"cows-{k}": str(v) for k, v in scores.items()}


def shown(database_url: str, context_id: str) -> dict:
    """What the screen showed last for the launch (the engine's result as described)."""
    with Database(database_url).session() as db:
        return db.get(LaunchContext, context_id).shown


def bup(shown_: dict) -> dict:
    return next(s for s in shown_["suggestions"] if s["kind"] == "moud-buprenorphine")


def events(database_url: str, type_: str, patient_id: str) -> list[dict]:
    with Database(database_url).session() as db:
        query = select(LogEvent).where(LogEvent.type == type_, LogEvent.patient_id == patient_id)
        return [dict(e.data) for e in db.scalars(query.order_by(LogEvent.seq))]


def cows_observations(stack, patient_id: str) -> list[dict]:
    system, code = COWS_CODE
    return stack.reader(patient_id).search(f"Observation?patient={patient_id}&code={system}|{code}")


def note_texts(stack, patient_id: str) -> list[str]:
    notes = stack.reader(patient_id).search(f"DocumentReference?patient={patient_id}")
    return [base64.b64decode(c["attachment"]["data"]).decode() for n in notes for c in n["content"]]
