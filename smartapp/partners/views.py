"""The consent form: the patient's consent to share the referral with a community partner,
recorded and revoked by whoever talks with the patient about the program: the coach from the
worklist (`partners.consent_form`), or the physician from the screen after Sign where no coach
is involved (`partners.physician_consent`; Sign itself is not lengthened). The partner API and
the partner web page are blueprints of their own, nested here so the app registers one
blueprint (`partners`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from smartapp.partners import consent as consents
from smartapp.partners.api_views import bp as api_bp
from smartapp.partners.runtime import partner_services
from smartapp.partners.web_views import bp as web_bp
from smartapp.screen import service as screen_service
from smartapp.services import current_services
from smartapp.staff.auth import current_staff, require_role
from smartapp.web import check_csrf, holds_browser_id
from smartapp.writeback.actor import Actor

bp = Blueprint("partners", __name__)
bp.register_blueprint(api_bp)
bp.register_blueprint(web_bp)
log = logging.getLogger("handoff.partners")
#: Who may record or revoke a consent on the staff side.
CONSENT_ROLES = ("coach", "supervisor")


def _staff_actor() -> Actor:
    staff = current_staff()
    if staff is None:  # pragma: no cover - require_role let only signed-in staff through
        abort(403)
    if "coach" in staff["roles"]:
        return Actor("coach", staff["name"], staff["user_ref"])
    return Actor("supervisor", staff["name"], staff["user_ref"])


@bp.route("/staff/handoffs/<referral_id>/consent", methods=["GET", "POST"])
@require_role(*CONSENT_ROLES)
def consent_form(referral_id: str):
    """GET: the form (partners for the handoff's program first, what is shared, the consents
    so far). POST: record the consent the patient gave."""
    here = url_for("partners.consent_form", referral_id=referral_id)
    if request.method == "POST":
        return _record(referral_id, _staff_actor(), here)
    return _page(
        referral_id,
        here,
        lambda c: url_for("partners.consent_revoke", referral_id=referral_id, consent_id=c),
        (url_for("worklist.index"), "Back to the worklist"),
        current_staff()["name"],  # type: ignore[index]
    )


@bp.post("/staff/handoffs/<referral_id>/consent/<consent_id>/revoke")
@require_role(*CONSENT_ROLES)
def consent_revoke(referral_id: str, consent_id: str):
    """The patient withdrew the consent: the partner is refused from the next request on."""
    here = url_for("partners.consent_form", referral_id=referral_id)
    return _revoke(referral_id, consent_id, _staff_actor(), here)


def _physician(context_id: str) -> tuple[str, Actor]:
    """The referral signed in this browser's launch, and the physician as who acted."""
    services = current_services()
    context = screen_service.find_context(services, context_id)
    if context is None or not holds_browser_id(context.browser_id):
        abort(403, description="This Handoff session is not yours or has ended.")
    referral = screen_service.signed_referral(services, context)
    if referral is None:
        abort(404, description="Sign the referral first; then record the consent to share.")
    name = (referral.decision.get("shown") or {}).get("signer_name") or "ED physician"
    return referral.id, Actor("physician", name, context.user_ref)


@bp.route("/c/<context_id>/consent", methods=["GET", "POST"])
def physician_consent(context_id: str):
    """The same form for the physician, inside the launch, after Sign."""
    referral_id, actor = _physician(context_id)
    here = url_for("partners.physician_consent", context_id=context_id)
    if request.method == "POST":
        return _record(referral_id, actor, here)
    return _page(
        referral_id,
        here,
        lambda c: url_for("partners.physician_revoke", context_id=context_id, consent_id=c),
        (url_for("screen.show", context_id=context_id), "Back to the screen"),
        actor.display,
    )


@bp.post("/c/<context_id>/consent/<consent_id>/revoke")
def physician_revoke(context_id: str, consent_id: str):
    referral_id, actor = _physician(context_id)
    here = url_for("partners.physician_consent", context_id=context_id)
    return _revoke(referral_id, consent_id, actor, here)


def _record(referral_id: str, actor: Actor, here: str):
    check_csrf()
    db = current_services().db
    try:
        handoff = consents.summary(db, referral_id)
    except consents.ConsentError as exc:
        abort(404, description=str(exc))
    partner = partner_services().partners().by_id(request.form.get("partner"))
    if partner is None:
        flash("Choose the program's organisation the patient agreed to share with.", "error")
        return redirect(here)
    program_id = request.form.get("program") or _program_id(handoff.program_id)
    program = _program(program_id) if program_id in partner.programs else None
    try:
        consents.record(db, referral_id, partner, request.form.get("purpose", ""), actor, program)
    except consents.ConsentError as exc:
        flash(str(exc), "error")
        return redirect(here)
    flash(f"Consent to share with {partner.name} recorded.", "ok")
    return redirect(here)


def _revoke(referral_id: str, consent_id: str, actor: Actor, here: str):
    check_csrf()
    db = current_services().db
    if not any(c.id == consent_id for c in consents.for_referral(db, referral_id)):
        abort(404, description="No such consent for this handoff.")
    consents.revoke(db, consent_id, actor, request.form.get("reason"))
    flash("Consent revoked: nothing more is shared with the program.", "ok")
    return redirect(here)


def _page(
    referral_id: str,
    here: str,
    revoke_url: Callable[[str], str],
    back: tuple[str, str],
    signed_in: str,
):
    db = current_services().db
    try:
        handoff = consents.summary(db, referral_id)
    except consents.ConsentError as exc:
        abort(404, description=str(exc))
    partners = partner_services().partners()
    program_id = _program_id(handoff.program_id)
    matching = partners.for_program(program_id)
    others = [p for p in partners if p not in matching]
    found = consents.for_referral(db, referral_id)
    return render_template(
        "partners/consent.html",
        handoff=handoff,
        partners=matching + others,
        suggested=matching[0].id if matching else None,
        programs=_programs(),
        program_id_chosen=program_id,
        purposes=consents.PURPOSES,
        shared=consents.SHARED,
        consents=found,
        revoke_urls={c.id: revoke_url(c.id) for c in found},
        form_action=here,
        back=back,
        signed_in=signed_in,
        partner_names={p.id: p.name for p in partners},
    )


def _programs() -> dict[str, str]:
    catalog = current_services().catalog
    return {p.id: p.name for p in catalog.programs()} if catalog else {}


def _program(program_id: str | None) -> dict[str, str] | None:
    name = _programs().get(program_id or "")
    return {"id": program_id or "", "display": name} if name else None


def _program_id(words: str | None) -> str | None:
    """The catalog program the handoff names: its id, or the words the screen stored (the
    name, or "name (phone)")."""
    catalog = current_services().catalog
    program = catalog.named(words) if catalog is not None else None
    return program.id if program is not None else words
