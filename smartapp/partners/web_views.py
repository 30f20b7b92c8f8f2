"""The partner web page, for programs without a system of their own: a partner's staff sign in
with the hospital's identity provider (OpenID Connect, the staff sign-in's client; the id_token
must carry the `partner` role, and the organisation in PARTNER_ORG_CLAIM or the user listed in
the partner's file), see the referrals shared with their organisation and report on them
through the same path as the partner API."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from smartapp.handoffs.lifecycle import BUSINESS_STEPS, BUSINESS_WORDS
from smartapp.partners import shared as sharing
from smartapp.partners import updates
from smartapp.partners.registry import Partner
from smartapp.partners.runtime import partner_services
from smartapp.services import current_services
from smartapp.staff import sessions as staff_sessions
from smartapp.staff.auth import (
    SESSION_KEY,
    current_staff,
    open_fresh_session,
    signed_in_claims,
    staff_client,
)
from smartapp.staff.identity import record_sign_in
from smartapp.web import check_csrf

bp = Blueprint("web", __name__, url_prefix="/partner")
log = logging.getLogger("handoff.partners.web")
ROLE = "partner"
#: The reports a partner's staff can make on the page: (label, status, business step).
REPORTS = {
    "accept": ("Accepted the referral", "accepted", None),
    "scheduled": ("First appointment scheduled", None, "appointment-scheduled"),
    "attended": ("First appointment attended", "completed", "appointment-attended"),
    "engaged": ("Engaged in care at 30 days", None, "engaged-30-days"),
    "reject": ("Cannot take this referral", "rejected", None),
}


def signed_in_partner() -> Partner | None:
    """The partner organisation of the signed-in partner user (None when not signed in as
    one, or the organisation no longer lets this user in)."""
    staff = current_staff()
    if staff is None or ROLE not in staff.get("roles", []):
        return None
    partner = partner_services().partners().by_id(session.get("partner_id"))
    if partner is None:
        return None
    if session.get("partner_via") == "list" and staff.get("sub") not in partner.web_users:
        return None
    return partner


def reports_for(task: dict) -> dict[str, str]:
    """The reports that move this Task on (never back): key -> label."""
    status = task.get("status")
    if status in ("rejected", "cancelled"):
        return {}
    step = updates.step_code(task.get("businessStatus"))
    done = BUSINESS_STEPS.index(step) if step in BUSINESS_STEPS else -1
    offered = {}
    for key, (label, new_status, new_step) in REPORTS.items():
        if new_step is not None and BUSINESS_STEPS.index(new_step) <= done:
            continue
        if status == "completed" and new_status is not None:
            continue
        if new_status == "accepted" and status != "requested":
            continue
        offered[key] = label
    return offered


@bp.get("/login")
def login():
    client = staff_client()
    if client is None:
        abort(404, description="Sign-in is not configured (STAFF_OIDC_ISSUER).")
    redirect_uri = current_app.config["PUBLIC_URL"].rstrip("/") + url_for("partners.web.callback")
    return client.authorize_redirect(redirect_uri, prompt="login")


@bp.get("/callback")
def callback():
    claims = signed_in_claims("partner")
    roles = claims.get(current_app.config.get("STAFF_ROLES_CLAIM", "handoff_roles")) or []
    if ROLE not in roles:
        abort(403, description="Your account has no partner role for Handoff.")
    partner, via = _partner_of(claims)
    if partner is None:
        abort(403, description="Your account names no partner organisation known to Handoff.")
    staff = {
        "sub": claims.get("sub"),
        "name": claims.get("name") or claims.get("sub"),
        "user_ref": claims.get("fhirUser") or f"urn:staff:{claims.get('sub')}",
        "roles": [ROLE],
    }
    open_fresh_session(staff)
    session["partner_id"], session["partner_via"] = partner.id, via
    record_sign_in(current_services().db, staff | {"roles": [ROLE, f"partner:{partner.id}"]})
    return redirect(url_for("partners.web.home"))


def _partner_of(claims: dict) -> tuple[Partner | None, str]:
    """The organisation from the id_token's claim (a partner id or its Organization
    reference), else the partner whose file lists the user's `sub`."""
    partners = partner_services().partners()
    claimed = claims.get(current_app.config.get("PARTNER_ORG_CLAIM") or "handoff_organization")
    if isinstance(claimed, str) and claimed:
        for partner in partners:
            if claimed in (partner.id, partner.reference):
                return partner, "claim"
        return None, "claim"
    return partners.for_user(claims.get("sub")), "list"


@bp.get("/")
def home():
    partner = signed_in_partner()
    if partner is None:
        return redirect(url_for("partners.web.login"))
    with current_services().db.session() as db_session:
        found = sharing.search(db_session, partner)
        rows = []
        for item in found:
            sharing.log_read(db_session, partner, item, "web")
            rows.append(
                {
                    "task": sharing.task(item, partner),
                    "request": sharing.service_request(item, partner),
                    "patient": sharing.patient(item),
                    "reports": reports_for(sharing.task(item, partner)),
                }
            )
    return render_template(
        "partners/home.html",
        partner=partner,
        rows=rows,
        reports=REPORTS,
        words=BUSINESS_WORDS,
        steps=BUSINESS_STEPS,
        staff=current_staff(),
    )


@bp.post("/referrals/<referral_id>")
def report(referral_id: str):
    check_csrf()
    partner = signed_in_partner()
    if partner is None:
        abort(403, description="Sign in as your organisation's staff first.")
    chosen = REPORTS.get(request.form.get("report", ""))
    if chosen is None:
        abort(400, description="Choose what to report.")
    _label, status, step = chosen
    try:
        with current_services().db.session() as db_session:
            current = sharing.task(sharing.find(db_session, partner, referral_id), partner)
        wanted = dict(current)
        if status:
            wanted["status"] = status
        if step:
            wanted["businessStatus"] = {"coding": [{"code": step}], "text": BUSINESS_WORDS[step]}
        reason = (request.form.get("reason") or "").strip()
        if reason:
            wanted["statusReason"] = {"text": reason}
        _task, changed = updates.update(
            current_services().db,
            partner,
            referral_id,
            wanted=wanted,
            if_match=request.form.get("version"),
        )
    except (sharing.NotShared, sharing.OtherPartner):
        abort(403, description="This referral is not shared with your organisation.")
    except updates.Refused as refused:
        flash(refused.message, "error")
        return redirect(url_for("partners.web.home"))
    if changed:
        from smartapp.partners.api_views import _deliver

        _deliver(referral_id)
    flash("Thank you: the referral is updated." if changed else "Nothing changed.", "ok")
    return redirect(url_for("partners.web.home"))


@bp.post("/logout")
def logout():
    check_csrf()
    token = session.get(SESSION_KEY)
    if isinstance(token, str):
        staff_sessions.end_session(current_services().db, token)
    session.clear()
    return redirect(url_for("partners.web.login"))
