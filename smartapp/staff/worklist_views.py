"""The coach team's worklist page: open warm handoffs, each coach's load, and the actions
(accept, record contact, link to a program, close with a reason). Coaches sign in as staff."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from smartapp.launch import sessions
from smartapp.services import current_services
from smartapp.staff import worklist
from smartapp.staff.auth import current_staff, require_role
from smartapp.web import check_csrf
from smartapp.writeback import outbox

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
    program = request.form.get("program", "").strip()
    if program and services.catalog is not None:
        try:
            chosen = services.catalog.get(program)
            program = f"{chosen.name} ({chosen.phone})"
        except KeyError:
            pass
    program = program or request.form.get("program-other", "").strip() or None
    try:
        worklist.act(
            services.db,
            referral_id,
            action,
            current_staff(),
            note=request.form.get("note"),
            program=program,
            reason=request.form.get("reason"),
        )
    except worklist.WorklistError as exc:
        flash(str(exc), "error")
        return redirect(url_for("worklist.index"))
    referral = outbox.get(services.db, referral_id)
    if referral is not None and referral.status == "queued":
        # Try the Task update now; the worker retries if the EHR is away.
        outbox.deliver(
            services.db,
            referral_id,
            lambda r, force_refresh=False: sessions.client_for_referral(services, r, force_refresh),
            confirm_wait=current_app.config.get(
                "OUTBOX_CONFIRM_WAIT_SECONDS", outbox.CONFIRM_WAIT_SECONDS
            ),
        )
    flash(f"Handoff updated: {action}.", "ok")
    return redirect(url_for("worklist.index"))
