"""The coach's consent form (`partners.consent_form`): the patient's consent to share the
referral with a community partner, recorded, and revoked, by whoever talks with the patient.
The partner API and the partner web page are blueprints of their own, nested here so the app
registers one blueprint (`partners`)."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from smartapp.partners import consent as consents
from smartapp.partners.api_views import bp as api_bp
from smartapp.partners.runtime import partner_services
from smartapp.partners.web_views import bp as web_bp
from smartapp.services import current_services
from smartapp.staff.auth import current_staff, require_role
from smartapp.web import check_csrf
from smartapp.writeback.actor import Actor

bp = Blueprint("partners", __name__)
bp.register_blueprint(api_bp)
bp.register_blueprint(web_bp)
log = logging.getLogger("handoff.partners")
#: Who may record or revoke a consent on the staff side.
CONSENT_ROLES = ("coach", "supervisor")


def _actor() -> Actor:
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
    db = current_services().db
    try:
        handoff = consents.summary(db, referral_id)
    except consents.ConsentError as exc:
        abort(404, description=str(exc))
    partners = partner_services().partners()
    if request.method == "POST":
        check_csrf()
        partner = partners.by_id(request.form.get("partner"))
        if partner is None:
            flash("Choose the program's organisation the patient agreed to share with.", "error")
            return redirect(url_for("partners.consent_form", referral_id=referral_id))
        program_id = request.form.get("program") or _program_id(handoff.program_id)
        program = _program(program_id) if program_id in partner.programs else None
        try:
            consents.record(
                db, referral_id, partner, request.form.get("purpose", ""), _actor(), program
            )
        except consents.ConsentError as exc:
            flash(str(exc), "error")
            return redirect(url_for("partners.consent_form", referral_id=referral_id))
        flash(f"Consent to share with {partner.name} recorded.", "ok")
        return redirect(url_for("partners.consent_form", referral_id=referral_id))
    program_id = _program_id(handoff.program_id)
    matching = partners.for_program(program_id)
    others = [p for p in partners if p not in matching]
    return render_template(
        "partners/consent.html",
        handoff=handoff,
        partners=matching + others,
        suggested=matching[0].id if matching else None,
        programs=_programs(),
        program_id_chosen=program_id,
        purposes=consents.PURPOSES,
        shared=consents.SHARED,
        consents=consents.for_referral(db, referral_id),
        partner_names={p.id: p.name for p in partners},
        staff=current_staff(),
    )


@bp.post("/staff/handoffs/<referral_id>/consent/<consent_id>/revoke")
@require_role(*CONSENT_ROLES)
def consent_revoke(referral_id: str, consent_id: str):
    """The patient withdrew the consent: the partner is refused from the next request on."""
    check_csrf()
    db = current_services().db
    found = [c for c in consents.for_referral(db, referral_id) if c.id == consent_id]
    if not found:
        abort(404, description="No such consent for this handoff.")
    consents.revoke(db, consent_id, _actor(), request.form.get("reason"))
    flash("Consent revoked: nothing more is shared with the program.", "ok")
    return redirect(url_for("partners.consent_form", referral_id=referral_id))


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
    if not words or catalog is None:
        return words
    for program in catalog.programs():
        if words in (program.id, program.name, f"{program.name} ({program.phone})"):
            return program.id
    return words
