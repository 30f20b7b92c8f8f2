"""Drive a SMART launch of Handoff with `requests` as the browser, one redirect at a time, so
tests can stop, replay or tamper at any step. Also the sandbox's test controls."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlparse

import requests

from tests.smart_helpers import chart_launch


@dataclass
class Launch:
    """The URLs of one launch, step by step, and the browser that made it."""

    browser: requests.Session
    launch_value: str | None = None
    authorize_url: str | None = None
    callback_url: str | None = None
    final: requests.Response | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def authorize_params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlparse(self.authorize_url).query).items()}


def follow(browser: requests.Session, url: str) -> requests.Response:
    return browser.get(url, allow_redirects=False, timeout=15)


def start(
    app_url: str, ehr_url: str, patient_id: str, browser: requests.Session | None = None
) -> Launch:
    """Open the chart at the EHR and hit Handoff's /launch; stop at the authorize redirect."""
    browser = browser or requests.Session()
    launch = Launch(browser=browser)
    launch.launch_value = chart_launch(ehr_url, patient_id, browser)
    query = urlencode({"iss": f"{ehr_url}/fhir", "launch": launch.launch_value})
    answer = follow(browser, f"{app_url}/launch?{query}")
    assert answer.status_code == 302, answer.text[:300]
    launch.authorize_url = answer.headers["Location"]
    return launch


def authorize(launch: Launch) -> Launch:
    """Let the EHR authorize; stop at the redirect back to Handoff's callback."""
    answer = follow(launch.browser, launch.authorize_url)
    assert answer.status_code in (302, 303), answer.text[:300]
    launch.callback_url = answer.headers["Location"]
    return launch


def finish(launch: Launch, browser: requests.Session | None = None) -> requests.Response:
    """Hit the callback, then follow Handoff's own redirects to the screen (or error page)."""
    browser = browser or launch.browser
    answer = follow(browser, launch.callback_url)
    while answer.status_code in (302, 303):
        launch.steps.append(answer.headers["Location"])
        location = answer.headers["Location"]
        if location.startswith("/"):
            parsed = urlparse(launch.callback_url)
            location = f"{parsed.scheme}://{parsed.netloc}{location}"
        answer = follow(browser, location)
    launch.final = answer
    return answer


def full(app_url: str, ehr_url: str, patient_id: str) -> Launch:
    launch = authorize(start(app_url, ehr_url, patient_id))
    finish(launch)
    return launch


def sign_all(launch: Launch, app_url: str) -> requests.Response:
    """Accept every suggestion on the launch's screen and Sign (as a browser form post)."""
    import re

    page = launch.final.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "consult-mode": "in-person"}
    for kind in re.findall(r'fieldset class="suggestion" data-kind="([^"]+)"', page):
        form[f"decision-{kind}"] = "accept"
    context_id = launch.final.url.rsplit("/", 1)[1]
    return launch.browser.post(f"{app_url}/c/{context_id}/sign", data=form, timeout=30)


class Controls:
    """The sandbox's fault switches and request log (only with test_controls=True)."""

    def __init__(self, ehr_url: str) -> None:
        self.url = f"{ehr_url}/_sandbox"

    def faults(self, **faults) -> None:
        requests.post(f"{self.url}/faults", json=faults, timeout=5).raise_for_status()

    def clear(self) -> None:
        self.faults()
        self.clear_requests()

    def clear_requests(self) -> None:
        """Empty the request log, leaving the faults as they are."""
        requests.delete(f"{self.url}/requests", timeout=5).raise_for_status()

    def expire_tokens(self) -> None:
        requests.post(f"{self.url}/expire-tokens", timeout=5).raise_for_status()

    def requests(self) -> list[dict]:
        return requests.get(f"{self.url}/requests", timeout=5).json()

    def token_requests(self) -> int:
        return sum(1 for r in self.requests() if r["path"].endswith("/auth/token"))


def forget_ehr_documents(handle, monkeypatch) -> None:
    """Handoff (a test's server `handle`) as just started: no EHR's SMART configuration or key
    set kept yet (smartapp.launch.client.EhrDocuments), as after their time to live."""
    from smartapp.launch.client import EhrDocuments

    monkeypatch.setattr(handle.app.extensions["handoff"], "ehr_documents", EhrDocuments())
