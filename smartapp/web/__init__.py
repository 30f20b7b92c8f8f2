"""Cross-cutting web concerns, one module each: the browser's opaque session id (browser.py),
CSRF (csrf.py), security headers and the CSP (headers.py), error pages (errors.py), access-log
redaction and JSON log lines (logs.py), and serving in a thread for the demo and tests
(serving.py). `init_app` also installs smartapp.ops (health, readiness, metrics, request ids).

`init_app` installs them on the app; the names views import are re-exported here."""

from __future__ import annotations

from flask import Flask

from smartapp.web.browser import (
    EARLIER_BROWSER_IDS_KEPT,
    browser_id,
    holds_browser_id,
    renew_browser_id,
)
from smartapp.web.csrf import check_csrf, csrf_token
from smartapp.web.errors import install_error_pages
from smartapp.web.headers import content_security_policy, install_security_headers
from smartapp.web.logs import RedactQueryStrings, redact_access_logs, redact_query

__all__ = [
    "EARLIER_BROWSER_IDS_KEPT",
    "RedactQueryStrings",
    "browser_id",
    "check_csrf",
    "csrf_token",
    "holds_browser_id",
    "init_app",
    "redact_access_logs",
    "redact_query",
    "renew_browser_id",
]


def init_app(app: Flask) -> None:
    """CSRF tokens in templates, redacted access logs, security headers and error pages."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    redact_access_logs()

    # The registrations are loaded once at start, so the policy is made once too.
    # Imported here: the sandbox imports smartapp.web.serving, which runs this package first,
    # and must not load the app (services loads the database, the launch and the catalog).
    from smartapp.services import EXTENSION

    registry = app.extensions[EXTENSION].registry
    policy = content_security_policy(o for reg in registry for o in reg.frame_ancestors)
    install_security_headers(app, policy)
    install_error_pages(app)

    # Health, readiness, metrics, request ids and JSON logs (imported here for the same reason).
    from smartapp import ops

    ops.init_app(app)
