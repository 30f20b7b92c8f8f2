"""Sign a Flask test client in as staff the way the sign-in callback does: a server-side staff
session (smartapp.staff.sessions), its token in the session cookie."""

from __future__ import annotations

from flask import Flask

from smartapp.staff.auth import SESSION_KEY as STAFF_KEY  # noqa: F401  (the cookie's key)


def staff_session_token(app: Flask, staff: dict) -> str:
    """A live staff session for `staff` (sub, name, user_ref, roles); put it in the cookie as
    `session[STAFF_KEY]`."""
    from smartapp.services import current_services
    from smartapp.staff import sessions as staff_sessions
    from smartapp.staff.auth import limits

    with app.app_context():
        return staff_sessions.open_session(current_services().db, dict(staff), limits())
