"""The physician's screen: suggestions with evidence, the opt-out coach referral, Sign.

Web layer only: each view parses the request, calls the screen's Flask-free service
(`screen.service`: `present`, `sign`), and renders the page or the status code. The service
reads the chart, decides through the engine, writes through the outbox and records each step
in the referral log.
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from smartapp import threads
from smartapp.engine import ChartError
from smartapp.fhir.client import FhirError
from smartapp.launch import sessions
from smartapp.screen import service
from smartapp.screen.decisions import (
    blank_choices,
    decided,
    is_writing,
    parse_form,
    signed_words,
)
from smartapp.screen.programs import program_choices
from smartapp.screen.signed import summary as signed_summary
from smartapp.services import current_services
from smartapp.web import check_csrf, holds_browser_id
from smartapp.web.background import start_beside
from smartapp.writeback import outbox

bp = Blueprint("screen", __name__, url_prefix="/c")
log = logging.getLogger("handoff.screen")


def load_context(context_id: str) -> service.LaunchContext:
    """The launch context, only for the browser that launched it."""
    return yours(service.find_context(current_services(), context_id))


def load_visit(context_id: str) -> tuple[service.LaunchContext, Any]:
    """The launch context (only for the browser that launched it) and the referral signed
    for its visit, if any."""
    context, referral = service.find_visit(current_services(), context_id)
    return yours(context), referral


def yours(context: service.LaunchContext | None) -> service.LaunchContext:
    """The context if this browser launched it; 403 otherwise."""
    if context is None or not holds_browser_id(context.browser_id):
        log.warning("screen refused: unknown context or another browser's")
        abort(
            403,
            description="This Handoff session is not yours or has ended. "
            "Launch Handoff again from the patient's chart.",
        )
    return context


def settings() -> service.ScreenSettings:
    return service.ScreenSettings.from_config(current_app.config)


def signed_page(
    context: service.LaunchContext, shown: dict | None, referral: Any, **extra: Any
) -> str:
    """The page of a visit that is signed already: what was decided and where it stands,
    what is left to do in the EHR, and the links to what comes after Sign."""
    return render_template(
        "screen.html",
        context=context,
        shown=shown,
        referral=referral,
        decided=decided(referral),
        errors=[],
        choices={},
        signed=signed_words(referral),
        writing=is_writing(referral),
        after=signed_summary(referral),
        links=after_links(context.id),
        **extra,
    )


# What comes after Sign, where the blueprint that serves it is registered (amend and the
# discharge sheet: smartapp.aftercare; consent to share: smartapp.partners).
AFTER_LINKS = (
    ("aftercare.sheet", "Discharge sheet for the patient"),
    ("aftercare.amend", "Amend: the patient changed their mind, or a choice was wrong"),
    ("partners.physician_consent", "Record the patient's consent to share"),
)


def after_links(context_id: str) -> list[dict]:
    """The links of the signed page whose routes exist in this app."""
    return [
        {"id": endpoint, "text": text, "href": url_for(endpoint, context_id=context_id)}
        for endpoint, text in AFTER_LINKS
        if endpoint in current_app.view_functions
    ]


def error_page(title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", title=title, message=message), 502


def unsigned_page(context: service.LaunchContext, shown: dict, errors: list, choices: dict) -> str:
    """The screen before Sign: the suggestions with the physician's choices (blank, or as
    posted when the page comes back with errors)."""
    return render_template(
        "screen.html",
        context=context,
        shown=shown,
        referral=None,
        decided={},
        errors=errors,
        choices=choices,
    )


@bp.get("/<context_id>")
def show(context_id: str):
    context, existing = load_visit(context_id)
    services = current_services()
    if existing is not None:
        # Signed already (in this launch or an earlier one): show what was decided and where
        # it stands, never the same suggestions as new.
        return signed_page(context, existing.decision.get("shown") or context.shown, existing)
    try:
        shown = service.present(services, context, settings(), datetime.now(UTC), record=False)
    except sessions.SessionEnded as exc:
        abort(403, description=str(exc))
    except FhirError as exc:
        log.warning("chart read failed: http=%s", exc.status)
        return error_page(
            "The chart could not be read", f"{exc} Nothing was written. Try again in a moment."
        )
    except ChartError as exc:
        log.warning("chart malformed: %s", exc.__class__.__name__)
        return error_page(
            "The chart could not be understood",
            f"The EHR sent data Handoff cannot read: {exc}. "
            "Nothing was written; tell your informatics team.",
        )
    # What was shown is kept on the launch (Sign acts on exactly that) and logged while the
    # page renders; the answer goes out once both are done.
    recording = threads.beside("screen-shown", service.record_shown, services, context, shown)
    page = unsigned_page(context, shown, [], blank_choices(shown))
    recording.result()
    return page


def load_shown_context(context_id: str) -> service.LaunchContext:
    """The launch context (see `load_context`) with what was shown on the page that posts
    (its `shown_at`: the evaluation's time). A page that is no longer the latest shown for the
    launch (another window, a newer evaluation) gets 409: its choices are never applied to
    what another page showed."""
    return _shown_by_this_page(load_context(context_id))


def load_shown_visit(context_id: str) -> tuple[service.LaunchContext, Any]:
    """`load_shown_context`, and the referral signed for its visit (one read for both)."""
    context, referral = load_visit(context_id)
    return _shown_by_this_page(context), referral


def _shown_by_this_page(context: service.LaunchContext) -> service.LaunchContext:
    """The context, unless what it last showed is not what the posting page showed (409)."""
    if context.shown and not _shows(context, request.form.get("shown_at") or None):
        log.info("post from a page that is no longer the latest shown")
        abort(
            409,
            description="The screen changed since this page was shown (a newer evaluation or "
            "another window). Nothing was recorded. Reload the page and choose again.",
        )
    return context


def _shows(context: service.LaunchContext, evaluated_at: str | None) -> bool:
    """Whether the context's record is the page's (any record, for a post without one)."""
    if not context.shown:
        return False
    return evaluated_at is None or context.shown.get("evaluated_at") == evaluated_at


@bp.context_processor
def inject_programs() -> dict:
    return program_choices(current_services(), datetime.now(UTC))


@bp.post("/<context_id>/sign")
def sign(context_id: str):
    check_csrf()
    context, existing = load_shown_visit(context_id)
    shown = context.shown
    if not shown:
        abort(400, description="Nothing was shown yet for this launch. Reload the page.")
    form = parse_form(request.form, shown)
    now = datetime.now(UTC)
    # The new referral is stored with the delivery's lease taken (one transaction, not two).
    owner = outbox.new_lease_owner()
    result = service.sign(current_services(), context, existing, form, settings(), now, owner)
    if result.outcome == "invalid":
        return unsigned_page(context, shown, result.errors, result.choices), 422
    if result.outcome == "conflict":
        return signed_page(context, result.shown, result.referral, conflict=result.conflict), 409
    referral = result.referral
    if result.outcome == "signed" and referral is not None and referral.status == "queued":
        # Wait a bounded time for the write; a slow EHR gets "queued, writing" and the page
        # follows the delivery, which goes on beside the request (and in the outbox worker).
        # The row as stored is handed to the delivery (not read again); not used here after.
        delivery = deliver_in_background(
            referral.id, leased_by=owner, loaded=context, stored=referral
        )
        delivery.join(current_app.config["SIGN_WAIT_SECONDS"])
        if delivery.is_alive():
            log.info("sign answered before the write landed: referral=%s", referral.id[:8])
    return redirect(url_for("screen.show", context_id=context.id))


def deliver_in_background(
    referral_id: str,
    what: str = "sign",
    leased_by: str | None = None,
    loaded: service.LaunchContext | None = None,
    stored: service.Referral | None = None,
) -> threading.Thread:
    """Start the referral's first write in a thread of its own (under the outbox's lease, so
    no worker writes it at the same time), which logs under this request's id; if this process
    dies, the lease runs out and the outbox worker takes over. `what`: the step that wrote
    (Sign, an amendment), for the thread's name and log line; `leased_by`: the lease's owner
    where the row was stored with it taken (else the delivery claims it); `loaded`: the launch
    context this request read, whose token the write uses while it is live (not read again);
    `stored`: the row as it was stored with the lease, handed over (`outbox.deliver`)."""
    # The app behind the proxy, for the thread (mypy types `current_app` as the Flask app
    # itself, not as the proxy that has this method).
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def run() -> None:
        with app.app_context():
            try:
                outbox.deliver(
                    current_services().db,
                    referral_id,
                    functools.partial(client_for_referral, loaded=loaded),
                    owner=leased_by,
                    leased=leased_by is not None,
                    stored=stored,
                )
            except Exception:  # it stays queued; the outbox worker retries it
                log.exception("%s delivery crashed: referral=%s", what, referral_id[:8])

    return start_beside(run, f"{what}-{referral_id[:8]}")


@bp.get("/<context_id>/status")
def status(context_id: str):
    """Where the visit's signed referral stands, for the page to follow a write that is still
    under way (polled by handoff.js; the page reloads when it changes)."""
    _, referral = load_visit(context_id)
    if referral is None:
        return jsonify(status="unsigned", attempts=0, writing=False)
    return jsonify(status=referral.status, attempts=referral.attempts, writing=is_writing(referral))


def client_for_referral(
    referral, force_refresh: bool = False, loaded: service.LaunchContext | None = None
):
    """Credentials for a referral's writes (see sessions.client_for_referral)."""
    return sessions.client_for_referral(current_services(), referral, force_refresh, loaded)
