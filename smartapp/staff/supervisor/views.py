"""The supervisor page (/supervisor/) and its reassign action; only the `supervisor` role.

Web layer only: parse, call `supervisor.service`, render. The page shows coach names and the
names of patients waiting (to place them); viewing it is logged as a read.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from smartapp.handoffs.lifecycle import LifecycleError
from smartapp.services import current_services
from smartapp.staff.auth import current_staff, require_role
from smartapp.staff.dashboard.formatting import format_minutes
from smartapp.staff.supervisor import service
from smartapp.web import check_csrf
from smartapp.writeback.worker import deliver_now

bp = Blueprint("supervisor", __name__, url_prefix="/supervisor")
log = logging.getLogger("handoff.supervisor")
SUPERVISOR = "supervisor"


def _signed_in() -> dict:
    staff = current_staff()
    assert staff is not None  # require_role turned anyone else away
    return staff


@bp.get("/")
@require_role(SUPERVISOR)
def index() -> ResponseReturnValue:
    services = current_services()
    staff = _signed_in()
    now = datetime.now(UTC)
    page = service.supervisor_page(
        services.db, current_app.config, services.catalog, now, viewer=staff["user_ref"]
    )
    return render_template(
        "supervisor/index.html",
        page=page,
        now=now,
        staff=staff,
        format_minutes=format_minutes,
    )


@bp.post("/reassign")
@require_role(SUPERVISOR)
def reassign() -> ResponseReturnValue:
    """Give a handoff (queued or held) to a coach: form fields `referral`, `to`, `note`."""
    check_csrf()
    services = current_services()
    referral_id = request.form.get("referral", "")
    try:
        state = service.reassign(
            services.db,
            current_app.config,
            referral_id,
            request.form.get("to", ""),
            _signed_in(),
            note=request.form.get("note") or None,
        )
    except LifecycleError as exc:
        flash(str(exc), "error")
        return redirect(url_for("supervisor.index"))
    deliver_now(services, referral_id, current_app.config)  # the worker retries if need be
    log.info("supervisor reassigned referral=%s", referral_id[:8])
    flash(f"Handoff reassigned to {state.owner_name}.", "ok")
    return redirect(url_for("supervisor.index"))
