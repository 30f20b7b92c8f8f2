"""Issue 9, launch security, from the attacker's side over real HTTP: open redirects after staff
sign-in, session fixation at the launch, staff sessions that outlive logout, what the access
logs keep, what the staff sign-in cookie carries, the EHR's own error text, and sessions that
end before their time."""

from __future__ import annotations

import html
import logging
import re
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
import requests

from tests import launch_flow
from tests.launch_flow import Controls


@pytest.fixture
def controls(sandbox):
    controls = Controls(sandbox.url)
    controls.clear()
    yield controls
    controls.clear()


def warned(caplog, text: str) -> bool:
    return any(r.levelno >= logging.WARNING and text in r.getMessage() for r in caplog.records)


# --- staff sign-in, driven with `requests` as the browser ------------------------------------


def follow_to(browser: requests.Session, url: str, stop_prefix: str) -> requests.Response:
    """Follow redirects one at a time until one points at `stop_prefix` (not followed), or a
    page is answered. The sandbox's sign-in page is answered by picking the user."""
    answer = browser.get(url, allow_redirects=False, timeout=15)
    for _ in range(10):
        if answer.status_code not in (301, 302, 303):
            return answer
        location = urljoin(answer.url, answer.headers["Location"])
        if location.startswith(stop_prefix):
            return answer
        answer = browser.get(location, allow_redirects=False, timeout=15)
    raise AssertionError("too many redirects")


def staff_sign_in(
    handoff_url: str, user_id: str, next_raw: str | None = None, browser=None
) -> tuple[requests.Session, requests.Response]:
    """Sign in at /staff/login (with a raw, already-encoded `next` query value) through the
    sandbox's sign-in page; returns the browser and Handoff's answer to the callback."""
    browser = browser or requests.Session()
    login = f"{handoff_url}/staff/login" + (f"?next={next_raw}" if next_raw is not None else "")
    callback_prefix = f"{handoff_url}/staff/callback"
    page = follow_to(browser, login, callback_prefix)
    if page.status_code == 200 and 'name="user"' in page.text:
        csrf = html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1])
        target = html.unescape(re.search(r'name="next" value="([^"]*)"', page.text)[1])
        signed = browser.post(
            page.url.split("?")[0],
            data={"csrf_token": csrf, "next": target, "user": user_id},
            allow_redirects=False,
            timeout=15,
        )
        assert signed.status_code == 302, signed.text[:300]
        page = follow_to(browser, urljoin(page.url, signed.headers["Location"]), callback_prefix)
    assert page.status_code in (302, 303), page.text[:300]
    callback = page.headers["Location"]
    assert callback.startswith(callback_prefix), callback
    return browser, browser.get(callback, allow_redirects=False, timeout=15)


# --- 31: open redirect after staff sign-in ---------------------------------------------------


@pytest.mark.parametrize(
    "next_raw",
    [
        "/%09/evil.example",
        "/%0A/evil.example",
        "%0A",
        "//evil.example",
        "/%5C/evil.example",
        "/%5Cevil.example",
        "%5C%5Cevil.example",
        "https://evil.example/",
        "/%2F%2Fevil.example",
        "/%0D%0ASet-Cookie:%20x=y",
        "javascript:alert(1)",
        "%20//evil.example",
    ],
)
def test_sign_in_redirects_only_to_a_same_origin_path(sandbox, handoff, next_raw):
    _, answer = staff_sign_in(handoff.url, "demo-coach-1", next_raw)
    assert answer.status_code in (302, 303), (answer.status_code, answer.text[:300])
    location = answer.headers["Location"]
    # What a browser does with it: strip tabs and newlines, read backslashes as slashes.
    as_browser = re.sub(r"[\t\n\r]", "", location).replace("\\", "/").strip()
    target = urlsplit(urljoin(f"{handoff.url}/staff/callback", as_browser))
    assert f"{target.scheme}://{target.netloc}" == handoff.url, location
    assert target.path.startswith("/") and not target.path.startswith("//"), location
    assert "evil" not in target.netloc


def test_sign_in_keeps_a_local_next(sandbox, handoff):
    _, answer = staff_sign_in(handoff.url, "demo-auditor", "/console/events%3Fpatient%3Dp1")
    assert answer.headers["Location"] == "/console/events?patient=p1"


# --- 36: the JWKS keeps its own cache header --------------------------------------------------


def test_jwks_is_cacheable_and_pages_are_not(sandbox, handoff):
    jwks = requests.get(f"{handoff.url}/.well-known/jwks.json", timeout=10)
    assert jwks.status_code == 200
    assert jwks.headers["Cache-Control"] == "max-age=300"
    page = requests.get(f"{handoff.url}/", timeout=10)
    assert page.headers["Cache-Control"] == "no-store"


# --- 20: the EHR's own error text ------------------------------------------------------------


def test_the_ehrs_authorize_error_is_shown_and_logged(sandbox, handoff, controls, caplog):
    """A launch value used twice: the EHR redirects back with its error and description."""
    first = launch_flow.authorize(launch_flow.start(handoff.url, sandbox.url, "P02-pt"))
    query = urlencode({"iss": f"{sandbox.url}/fhir", "launch": first.launch_value})
    again = launch_flow.Launch(browser=first.browser)
    answer = launch_flow.follow(first.browser, f"{handoff.url}/launch?{query}")
    again.authorize_url = answer.headers["Location"]
    launch_flow.authorize(again)
    assert "error_description=" in again.callback_url
    page = launch_flow.finish(again)
    assert page.status_code == 403
    text = html.unescape(page.text)
    assert "did not authorize" in text
    assert "invalid_request" in text
    assert "'launch' is unknown, expired or already used" in text
    assert warned(caplog, "'launch' is unknown, expired or already used")


def test_the_ehrs_error_description_is_escaped_and_cleaned(sandbox, handoff, controls, caplog):
    launch = launch_flow.start(handoff.url, sandbox.url, "P02-pt")
    state = launch.authorize_params["state"]
    said = 'Invalid client_id "x". Expected "y" <script>alert(1)</script>\nFORGED log line'
    answer = launch_flow.follow(
        launch.browser,
        f"{handoff.url}/callback?"
        + urlencode({"state": state, "error": "invalid_client", "error_description": said}),
    )
    assert answer.status_code == 403
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;" in answer.text
    text = html.unescape(answer.text)
    assert 'Invalid client_id "x". Expected "y"' in text and "invalid_client" in text
    lines = [r.getMessage() for r in caplog.records if 'Expected "y"' in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)  # no forged log line


def test_the_token_endpoints_error_description_is_shown(sandbox, handoff_basic, monkeypatch):
    from tests.conftest import BASIC_SECRET_ENV

    monkeypatch.setenv(BASIC_SECRET_ENV, "not-the-secret")
    launch = launch_flow.full(handoff_basic.url, sandbox.url, "P03-pt")
    assert launch.final.status_code == 400
    text = html.unescape(launch.final.text)
    assert "refused the token request (invalid_client" in text
    assert "secret" in text.split("invalid_client", 1)[1]  # the EHR's description of the check
