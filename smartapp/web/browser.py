"""The browser's opaque id, kept in its session: pending authorizations and launch contexts are
bound to it, and a launch's callback renews it (no session fixation)."""

from __future__ import annotations

import hmac
import secrets

from flask import session

#: How many earlier browser ids a session keeps, so tabs launched before the newest launch
#: (each launch renews the id) keep working.
EARLIER_BROWSER_IDS_KEPT = 16


def browser_id() -> str:
    """An opaque id for this browser; pending authorizations and launch contexts are bound
    to it."""
    if "browser_id" not in session:
        session["browser_id"] = secrets.token_urlsafe(32)
    return session["browser_id"]


def holds_browser_id(value: str | None) -> bool:
    """Whether this browser's session holds `value`: its current id or an earlier one."""
    held = [session.get("browser_id"), *session.get("earlier_browser_ids", [])]
    return bool(value) and any(h and hmac.compare_digest(value, h) for h in held)


def renew_browser_id() -> str:
    """A fresh browser id at sign-in (a launch's callback), so a session id planted in this
    browser before (session fixation) never reaches what is bound from now on. The ids held
    before stay usable by this browser only, for the tabs it launched earlier."""
    earlier = [session.get("browser_id"), *session.get("earlier_browser_ids", [])]
    session["earlier_browser_ids"] = [i for i in earlier if i][:EARLIER_BROWSER_IDS_KEPT]
    session["browser_id"] = secrets.token_urlsafe(32)
    return session["browser_id"]
