"""After Sign, inside the launch: amend the coach referral (`aftercare.amend`) and the patient's
discharge sheet (`aftercare.sheet` HTML with a print stylesheet, `aftercare.sheet_pdf`).

Web layer only: routes are keyed by the launch context like the screen's and answer only the
browser that launched it; POSTs carry the session's CSRF token. The work is in
`aftercare.amend`, `aftercare.sheet` and `aftercare.pdf`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)

from smartapp.aftercare import amend as amending
from smartapp.aftercare import sheet as sheets
from smartapp.screen.programs import program_choices
from smartapp.screen.views import deliver_in_background, load_context
from smartapp.services import current_services
from smartapp.staff import caseload
from smartapp.web import check_csrf

bp = Blueprint("aftercare", __name__, url_prefix="/c")
log = logging.getLogger("handoff.aftercare")


def parse_form() -> amending.AmendForm:
    form = request.form
    return amending.AmendForm(
        action=form.get("action", ""),
        reason=form.get("reason", ""),
        text=form.get("text", "").strip()[: amending.TEXT_MAX],
        based_on=form.get("based_on", ""),
        consult_mode=form.get("consult-mode") or "in-person",
        program=form.get("program", "").strip(),
        program_other=form.get("program-other", "").strip(),
    )


def amend_page(context, state, errors=(), notice=None, form=None, status=200):
    programs = program_choices(current_services(), datetime.now(UTC))
    page = render_template(
        "aftercare/amend.html",
        context=context,
        state=state,
        handoff_status=handoff_status(state),
        reasons=amending.REASONS,
        errors=list(errors),
        notice=notice,
        form=form,
        languages=sheets.LANGUAGES,
        **programs,
    )
    return page, status


def handoff_status(state) -> dict:
    """Each referral's coach handoff status by referral id, for the page."""
    from smartapp.handoffs import service as handoffs
    from smartapp.handoffs.lifecycle import HandoffState, LifecycleError

    found: dict[str, HandoffState | None] = {}
    for referral in (state.original, *state.placed):
        try:
            found[referral.id] = handoffs.get(current_services().db, referral.id)
        except LifecycleError:
            found[referral.id] = None
    return found


@bp.route("/<context_id>/amend", methods=["GET", "POST"])
def amend(context_id: str):
    """GET: where the coach referral stands and the amend form. POST: amend it once."""
    context = load_context(context_id)
    services = current_services()
    state = amending.state(services, context)
    if state is None:
        abort(404, description="Sign first; an amendment changes what was signed.")
    if request.method == "GET":
        return amend_page(context, state, notice=request.args.get("done"))
    check_csrf()
    form = parse_form()
    system = current_app.config["REFERRAL_IDENTIFIER_SYSTEM"]
    result = amending.amend(services, context, form, system, datetime.now(UTC))
    state = amending.state(services, context)
    if result.outcome == "invalid":
        return amend_page(context, state, result.errors, form=form, status=422)
    if result.outcome == "stale":
        notice = (
            "Nothing more was changed: this visit's coach referral changed since the page was "
            "shown (a second click, another window, or the coach team). Here is where it "
            "stands now."
        )
        return amend_page(context, state, notice=notice, status=409)
    if result.referral is not None:
        delivery = deliver_in_background(result.referral.id, "amend")
        delivery.join(current_app.config["SIGN_WAIT_SECONDS"])
    return redirect(url_for("aftercare.amend", context_id=context.id, done=form.action))


def build_sheet(context_id: str) -> sheets.Sheet:
    context = load_context(context_id)
    language = request.args.get("lang", "en")
    if language not in sheets.LANGUAGES:
        abort(404, description="The discharge sheet is in English (en) and Spanish (es).")
    settings = caseload.Settings.from_config(current_app.config)
    try:
        return sheets.build(
            current_services(),
            context,
            language,
            settings,
            current_app.config["AFTERCARE_SHEET_DIR"],
        )
    except amending.AmendError as exc:
        abort(404, description=str(exc))


@bp.get("/<context_id>/sheet")
def sheet(context_id: str):
    """The discharge sheet as a page to print (its print stylesheet hides the buttons)."""
    found = build_sheet(context_id)
    return render_template(
        "aftercare/sheet.html",
        sheet=found,
        t=found.text,
        context_id=context_id,
        languages=sheets.LANGUAGES,
    )


@bp.get("/<context_id>/sheet.pdf")
def sheet_pdf(context_id: str):
    """The discharge sheet as a one-page PDF."""
    from smartapp.aftercare import pdf  # fpdf2, only where a PDF is asked for

    found = build_sheet(context_id)
    body = pdf.render(found)
    name = f"after-your-visit-{found.language}.pdf"
    return Response(
        body,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
