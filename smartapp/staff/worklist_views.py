"""The coach team's worklist page: open warm handoffs with what a coach needs to work them,
each coach's caseload, and the actions (accept, reassign, contact attempts, link to a
program, close with a reason, follow-up attempts and outcomes). Coaches sign in as staff.
The page polls `live` (a small JSON answer) and replaces only the rows that changed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from smartapp.handoffs import followup
from smartapp.handoffs.lifecycle import CONTACT_RESULTS, CONTACT_WORDS, NOTE_REQUIRED
from smartapp.services import current_services
from smartapp.staff import caseload, worklist
from smartapp.staff.auth import current_staff, require_role
from smartapp.web import check_csrf
from smartapp.writeback.actor import Actor
from smartapp.writeback.worker import deliver_now

bp = Blueprint("worklist", __name__, url_prefix="/worklist")
log = logging.getLogger("handoff.worklist")
CONSENT_ENDPOINT = "partners.consent_form"


def _now() -> datetime:
    return datetime.now(UTC)


def _settings() -> followup.FollowupSettings:
    return followup.FollowupSettings.from_config(current_app.config)


def _coach() -> dict:
    coach = current_staff()
    if coach is None:  # pragma: no cover - require_role let only a signed-in coach through
        abort(403)
    return coach


def _page_data(now: datetime, show_closed: bool) -> dict:
    """What the page and its live rows render from."""
    services = current_services()
    settings = _settings()
    case_settings = caseload.Settings.from_config(current_app.config, services.catalog)
    found = worklist.items(
        services.db,
        now,
        settings,
        catalog=services.catalog,
        warm_line=caseload.warm_line(services.catalog, case_settings, now),
        include_closed=show_closed,
    )
    loads = caseload.loads(services.db, case_settings, now)
    shared = _shared_with([i.referral_id for i in found])
    return {
        "shared": shared,
        "items": found,
        "loads": loads,
        "now": now,
        "zone": case_settings.timezone,  # times shown in the program's zone, as the supervisor's
        "staff": current_staff(),
        "followup": settings,
        "programs": services.catalog.programs() if services.catalog else [],
        "reasons": worklist.CLOSE_REASONS,
        "results": [(r, CONTACT_WORDS[r], NOTE_REQUIRED[r]) for r in CONTACT_RESULTS],
        "outcomes": followup.OUTCOMES,
        "show_closed": show_closed,
        "consent_endpoint": (
            CONSENT_ENDPOINT if CONSENT_ENDPOINT in current_app.view_functions else None
        ),
        "snapshot": worklist.snapshot(found, now, settings, shared),
        "poll_seconds": current_app.config.get("WORKLIST_POLL_SECONDS", 5),
    }


def _shared_with(referral_ids: list[str]) -> dict[str, list[str]]:
    """Referral id -> the partners (by name) an active consent shares it with."""
    from smartapp.partners import consent
    from smartapp.partners.runtime import partner_services

    found = consent.shared_with(current_services().db, referral_ids)
    if not found:
        return {}
    partners = partner_services().partners()
    named = {}
    for referral_id, ids in found.items():
        names = [(p.name if (p := partners.by_id(pid)) else pid) for pid in ids]
        named[referral_id] = sorted(set(names))
    return named


@bp.get("/")
@require_role("coach")
def index():
    data = _page_data(_now(), request.args.get("closed") == "1")
    return render_template("worklist.html", **data)


@bp.get("/live")
@require_role("coach")
def live():
    """The list's version, and where it differs from `v`, each row's version and HTML and
    the caseload panel, for the page to replace what changed without reloading."""
    data = _page_data(_now(), request.args.get("closed") == "1")
    snapshot = data["snapshot"]
    if request.args.get("v") == snapshot["version"]:
        return jsonify({"version": snapshot["version"], "changed": False})
    template = current_app.jinja_env.get_template("worklist_row.html")
    rows = [
        {
            "id": item.referral_id,
            "version": row["version"],
            "html": template.render(item=item, index=n, **data),
        }
        for n, (item, row) in enumerate(zip(data["items"], snapshot["items"], strict=True))
    ]
    loads = current_app.jinja_env.get_template("worklist_loads.html").render(**data)
    return jsonify({"version": snapshot["version"], "changed": True, "rows": rows, "loads": loads})


def _done(message: str, referral_id: str | None = None):
    services = current_services()
    if referral_id:  # try the Task update now; the worker retries if the EHR is away
        deliver_now(services, referral_id, current_app.config)
    flash(message, "ok")
    return redirect(url_for("worklist.index"))


def _refused(exc: Exception):
    flash(str(exc), "error")
    return redirect(url_for("worklist.index"))


@bp.post("/<referral_id>/reassign")
@require_role("coach")
def reassign(referral_id: str):
    check_csrf()
    services = current_services()
    coach = _coach()
    to_ref = request.form.get("to", "")
    known = {
        load.coach.ref: load.coach.name
        for load in caseload.loads(services.db, current_app.config, _now())
    }
    if to_ref not in known:
        return _refused(worklist.WorklistError("Choose one of the coaches listed."))
    try:
        worklist.reassign(
            services.db,
            referral_id,
            coach,
            Actor("coach", known[to_ref], to_ref),
            current_app.config,
            note=request.form.get("note"),
        )
    except worklist.WorklistError as exc:
        return _refused(exc)
    return _done(f"Handed over to {known[to_ref]}.", referral_id)


@bp.post("/<referral_id>/followup/<int:day>")
@require_role("coach")
def followup_attempt(referral_id: str, day: int):
    check_csrf()
    form = request.form
    try:
        followup.record_attempt(
            current_services().db,
            referral_id,
            day,
            form.get("result", ""),
            form.get("note"),
            worklist.coach_actor(_coach()),
            _now(),
        )
    except worklist.WorklistError as exc:
        return _refused(exc)
    return _done(f"Day {day} follow-up recorded.")


@bp.post("/<referral_id>/outcome/<int:day>")
@require_role("coach")
def followup_outcome(referral_id: str, day: int):
    check_csrf()
    form = request.form
    try:
        followup.record_outcome(
            current_services().db,
            referral_id,
            day,
            form.get("outcome", ""),
            form.get("note"),
            worklist.coach_actor(_coach()),
            _now(),
            _settings(),
        )
    except worklist.WorklistError as exc:
        return _refused(exc)
    return _done(f"{day}-day outcome recorded.", referral_id)


def _catalog_id(chosen: str | None) -> str | None:
    """The program id when the form names a catalog program, else None."""
    catalog = current_services().catalog
    if not chosen or catalog is None:
        return None
    try:
        return catalog.get(chosen).id
    except KeyError:
        return None


@bp.post("/<referral_id>/<action>")
@require_role("coach")
def act(referral_id: str, action: str):
    check_csrf()
    services = current_services()
    form = request.form
    program = worklist.program_label(
        services.catalog, form.get("program"), form.get("program-other")
    )
    try:
        worklist.act(
            services.db,
            referral_id,
            action,
            _coach(),
            note=form.get("note"),
            program=program,
            reason=form.get("reason"),
            result=form.get("result"),
            program_id=_catalog_id(form.get("program")),
            config=current_app.config,
        )
    except worklist.WorklistError as exc:
        return _refused(exc)
    return _done(f"Handoff updated: {action}.", referral_id)
