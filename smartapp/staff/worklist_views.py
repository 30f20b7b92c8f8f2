"""The coach team's worklist page: open warm handoffs, each coach's load, and the actions
(accept, record contact, link to a program, close with a reason). Coaches sign in as staff."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)

from smartapp.services import current_services
from smartapp.staff import worklist
from smartapp.staff.auth import current_staff, require_role
from smartapp.web import check_csrf
from smartapp.writeback.worker import deliver_now

bp = Blueprint("worklist", __name__, url_prefix="/worklist")
log = logging.getLogger("handoff.worklist")


@bp.get("/")
@require_role("coach")
def index():
    services = current_services()
    now = datetime.now(UTC)
    show_closed = request.args.get("closed") == "1"
    items = worklist.items(services.db, include_closed=show_closed)
    programs = services.catalog.programs() if services.catalog else []
    return render_template(
        "worklist.html",
        items=items,
        loads=worklist.loads(services.db),
        now=now,
        staff=current_staff(),
        programs=programs,
        reasons=worklist.CLOSE_REASONS,
        show_closed=show_closed,
    )


@bp.post("/<referral_id>/<action>")
@require_role("coach")
def act(referral_id: str, action: str):
    check_csrf()
    services = current_services()
    form = request.form
    program = worklist.program_label(
        services.catalog, form.get("program"), form.get("program-other")
    )
    coach = current_staff()
    if coach is None:  # pragma: no cover - require_role let only a signed-in coach through
        abort(403)
    try:
        worklist.act(
            services.db,
            referral_id,
            action,
            coach,
            note=form.get("note"),
            program=program,
            reason=form.get("reason"),
            result=form.get("result"),
            program_id=form.get("program") or None,
        )
    except worklist.WorklistError as exc:
        flash(str(exc), "error")
        return redirect(url_for("worklist.index"))
    # Try the Task update now; the worker retries if the EHR is away.
    deliver_now(services, referral_id, current_app.config)
    flash(f"Handoff updated: {action}.", "ok")
    return redirect(url_for("worklist.index"))
