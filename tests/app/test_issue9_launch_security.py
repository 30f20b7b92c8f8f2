"""Issue 9, launch security, from the attacker's side over real HTTP: open redirects after staff
sign-in, session fixation at the launch, staff sessions that outlive logout, what the access
logs keep, what the staff sign-in cookie carries, the EHR's own error text, and sessions that
end before their time."""

from __future__ import annotations

import html
import logging
import re
from urllib.parse import urljoin, urlsplit

import pytest
import requests

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
