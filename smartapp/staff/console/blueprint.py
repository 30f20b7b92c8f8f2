"""The console blueprint ("console", /console), its roles and what every console page shares.

Auditors (`auditor`) read events; program managers (`program-manager`) see only the dashboard.
The auditor pages register in `smartapp.staff.console.views`, the dashboard page in
`smartapp.staff.dashboard.views`, on this one blueprint, so their endpoints stay
`console.<name>`.
"""

from __future__ import annotations

from flask import Blueprint, Flask, url_for
from sqlalchemy.orm import Session
from werkzeug.routing import BuildError

from smartapp.audit.chain import DEFAULT_EVERY, app_checkpointing
from smartapp.audit.incremental import Verified
from smartapp.audit.verify import Report
from smartapp.staff.auth import current_staff
from smartapp.staff.console.chain_status import chain_status
from smartapp.staff.dashboard.formatting import format_minutes, percent

bp = Blueprint("console", __name__, url_prefix="/console")

AUDITOR = "auditor"
MANAGER = "program-manager"


def _logout_url() -> str | None:
    try:
        return url_for("staff.logout")
    except BuildError:
        return None


@bp.context_processor
def console_globals() -> dict:
    staff = current_staff() or {}
    roles = staff.get("roles", [])
    return {
        "staff": staff,
        "is_auditor": AUDITOR in roles,
        "logout_url": _logout_url(),
        "format_minutes": format_minutes,
        "percent": percent,
    }


def signed_in() -> dict:
    """The staff member of a page behind `require_role` (always signed in there)."""
    staff = current_staff()
    assert staff is not None  # require_role turned anyone else away
    return staff


def app_chain_status(app: Flask, session: Session, *, full: bool = False) -> Verified:
    """The chain status with the app's checkpoint key, interval and checkpoint sink: from the
    last verified head on, or the whole log when `full`."""
    signer = app_checkpointing(app).signer
    every = int(app.config.get("AUDIT_CHECKPOINT_EVERY") or DEFAULT_EVERY)
    sink = app.config.get("AUDIT_CHECKPOINT_SINK")
    keys = [signer.public_key] if signer else []
    return chain_status(session, keys, every, sink, full=full)


def app_chain_report(app: Flask, session: Session) -> Report:
    """The report of `app_chain_status` (incremental)."""
    return app_chain_status(app, session).report
