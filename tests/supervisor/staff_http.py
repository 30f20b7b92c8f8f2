"""Staff in a real browser session (`requests`) against a running Handoff: signed in through
the sandbox's OpenID Connect sign-in page, or (where the stack's sandbox has no staff client)
with a server-side staff session put in a signed session cookie, as the callback does."""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

import requests
from flask import Flask

from tests.staff_login import STAFF_KEY, staff_session_token

CSRF = "c" * 43


def follow_to(browser: requests.Session, url: str, stop_prefix: str) -> requests.Response:
    """Follow redirects one at a time until one points at `stop_prefix` (not followed)."""
    answer = browser.get(url, allow_redirects=False, timeout=15)
    for _ in range(10):
        if answer.status_code not in (301, 302, 303):
            return answer
        location = urljoin(answer.url, answer.headers["Location"])
        if location.startswith(stop_prefix):
            return answer
        answer = browser.get(location, allow_redirects=False, timeout=15)
    raise AssertionError("too many redirects")


def sign_in(handoff_url: str, user_id: str) -> tuple[requests.Session, requests.Response]:
    """Sign `user_id` in at /staff/login through the sandbox's sign-in page (real OIDC)."""
    browser = requests.Session()
    callback_prefix = f"{handoff_url}/staff/callback"
    page = follow_to(browser, f"{handoff_url}/staff/login", callback_prefix)
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
    return browser, browser.get(page.headers["Location"], allow_redirects=False, timeout=15)


def as_staff(app: Flask, url: str, staff: dict) -> requests.Session:
    """A browser holding a live staff session for `staff` (and a known CSRF token)."""
    token = staff_session_token(app, staff)
    cookie = app.session_interface.get_signing_serializer(app).dumps(  # type: ignore[attr-defined]
        {STAFF_KEY: token, "csrf": CSRF}
    )
    browser = requests.Session()
    host = url.split("//", 1)[1].split(":", 1)[0]
    browser.cookies.set(app.config["SESSION_COOKIE_NAME"], cookie, domain=host, path="/")
    return browser


def csrf_of(page: str) -> str:
    return html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page)[1])
