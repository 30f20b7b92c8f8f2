"""Cross-cutting web concerns: the browser's opaque session, CSRF, security headers, errors."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import MutableMapping

from flask import Flask, abort, render_template, request, session

log = logging.getLogger("handoff.web")


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


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
        log.warning("request refused: missing or wrong CSRF token path=%s", request.path)
        abort(400, description="This form has expired. Reload the page and try again.")


# A query string runs to the next whitespace: a request line cannot hold a space, while a `"`
# (sent raw by a client that does not encode it) is part of the query, not its end.
QUERY = re.compile(r"\?\S*")


def redact_query(text: str) -> str:
    """`text` with every query string cut to `?…` (codes, state, launch values, searches)."""
    return QUERY.sub("?…", text)


class RedactQueryStrings(logging.Filter):
    """Access logs print request lines; query strings may hold a code, state, launch value or
    an auditor's patient search, so they are cut before any handler sees them (positional
    arguments as werkzeug logs them, a mapping as gunicorn's access logger passes its atoms)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_query(a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.args, MutableMapping) and record.args:
            # In place: gunicorn's mapping answers '-' for atoms a format names but lacks.
            for key, value in list(record.args.items()):
                if isinstance(value, str):
                    record.args[key] = redact_query(value)
        elif isinstance(record.msg, str):  # a message without arguments is its own text
            record.msg = redact_query(record.msg)
        return True


def redact_access_logs() -> None:
    for name in ("werkzeug", "gunicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
            logger.addFilter(RedactQueryStrings())


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token
    redact_access_logs()

    # The registrations are loaded once at start, so the policy is made once too.
    from smartapp.services import EXTENSION

    registry = app.extensions[EXTENSION].registry
    ancestors = " ".join(sorted({o for reg in registry for o in reg.frame_ancestors}))
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"form-action 'self' {ancestors}; frame-ancestors 'self' {ancestors}"
    )

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        # Pages hold PHI: never cached. A view that chose its own policy keeps it (the JWKS
        # is public and EHRs should cache it).
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def error_page(exc):
        code = getattr(exc, "code", 500) or 500
        title = {400: "Request not accepted", 403: "Not allowed", 404: "Not found"}.get(
            code, "Something went wrong"
        )
        if code == 413:  # MAX_CONTENT_LENGTH (issue 9 item 28)
            title, exc.description = "Too much data", (
                "What was sent is larger than Handoff accepts. Nothing was saved; "
                "reload the page and try again."
            )
        message = (
            getattr(exc, "description", None)
            if code < 500
            else (
                "Handoff hit an unexpected error. Nothing was written to the chart. "
                "Try again; if it persists, contact your informatics team."
            )
        )
        return render_template("error.html", title=title, message=message), code

    for code in (400, 403, 404, 405, 413, 500, 502):
        app.register_error_handler(code, error_page)
