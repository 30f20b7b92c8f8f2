"""SMART EHR launch: `/launch` (iss, launch) and `/callback` (code, state).

After the callback the browser holds only an opaque session cookie; tokens stay in the database,
encrypted. Each launch gets its own context id, so two tabs never mix two patients.
"""

from __future__ import annotations

import logging
from datetime import timedelta

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
from werkzeug.wrappers import Response as WerkzeugResponse

from smartapp.launch import service
from smartapp.launch.registrations import Registration
from smartapp.services import current_services
from smartapp.web import browser_id, holds_browser_id, renew_browser_id

bp = Blueprint("launch", __name__)
log = logging.getLogger("handoff.launch")


def redirect_uri() -> str:
    """Where the EHR sends the browser back to: /callback under PUBLIC_URL."""
    return current_app.config["PUBLIC_URL"].rstrip("/") + "/callback"


def launch_settings() -> service.LaunchSettings:
    """The launch's settings from the app's configuration."""
    return service.LaunchSettings(
        redirect_uri=redirect_uri(),
        state_ttl=timedelta(seconds=current_app.config["STATE_TTL_SECONDS"]),
        timeout=current_services().timeout,
    )


@bp.get("/launch")
def launch():
    """EHR launch: check the issuer is registered before sending it anything, then authorize."""
    iss = request.args.get("iss", "").rstrip("/")
    launch_value = request.args.get("launch")
    if not iss:
        log.warning("launch refused: no iss")
        abort(400, description="Handoff must be launched from the EHR (no issuer was given).")
    if not launch_value:
        log.warning("launch refused: EHR launch without a launch value")
        abort(
            400,
            description="The EHR did not send a launch context. Launch Handoff from the "
            "patient's chart, or start it from Handoff's start page.",
        )
    registration = current_services().registry.for_issuer(iss)
    if registration is None:
        log.warning("launch refused: issuer not registered")
        abort(
            403,
            description="This EHR is not registered with Handoff. Ask your IT team to "
            "add it to Handoff's launch registrations.",
        )
    return start_authorization(registration, launch_value)


@bp.get("/")
def start_page():
    """Standalone launch: pick the EHR; the EHR then asks for the patient."""
    registrations = [r for r in current_services().registry if r.standalone]
    return render_template("start.html", registrations=registrations)


@bp.get("/start/<registration_id>")
def standalone(registration_id: str):
    registration = current_services().registry.by_id(registration_id)
    if registration is None or not registration.standalone:
        log.warning("standalone launch refused: unknown registration")
        abort(404, description="No such EHR is registered for standalone launch.")
    return start_authorization(registration, None)


def start_authorization(registration: Registration, launch_value: str | None) -> WerkzeugResponse:
    """Discovery, then redirect to the EHR's authorize endpoint (state and PKCE kept)."""
    try:
        url = service.begin_authorization(
            current_services(), registration, launch_value, launch_settings(), browser_id
        )
    except service.LaunchRefused as exc:
        abort(exc.status, description=exc.description)
    return redirect(url)


@bp.get("/.well-known/jwks.json")
def jwks():
    """Handoff's public keys, for EHRs that authenticate it with private_key_jwt."""
    response = jsonify(current_services().keys.public_jwks())
    response.headers["Cache-Control"] = "max-age=300"
    return response


@bp.get("/callback")
def callback() -> WerkzeugResponse:
    """Check state (known, this browser, unused, fresh), trade the code, verify the id_token;
    then show the screen of the new launch context."""
    params = service.CallbackParams(
        state=request.args.get("state", ""),
        code=request.args.get("code"),
        error=request.args.get("error"),
        error_description=request.args.get("error_description"),
    )
    browser = service.Browser(holds=holds_browser_id, renew=renew_browser_id)
    try:
        context_id = service.complete_launch(current_services(), params, launch_settings(), browser)
    except service.LaunchRefused as exc:
        abort(exc.status, description=exc.description)
    return redirect(url_for("screen.show", context_id=context_id))
