"""CSRF protection for Handoff's forms: a per-session token every form carries
(`csrf_token` in templates) and `check_csrf` in each view that takes a POST."""

from __future__ import annotations

import hmac
import logging
import secrets

from flask import abort, request, session

log = logging.getLogger("handoff.web")


def csrf_token() -> str:
    """This session's CSRF token (made on first use); forms send it back as `csrf_token`."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    """Refuse the request (400, logged) unless its form carries this session's CSRF token."""
    sent = request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        log.warning("request refused: missing or wrong CSRF token path=%s", request.path)
        abort(400, description="This form has expired. Reload the page and try again.")
