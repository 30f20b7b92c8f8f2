"""SMART EHR launch: `/launch` (iss, launch) and `/callback` (code, state).

After the callback the browser holds only an opaque session cookie; tokens stay in the database,
encrypted. Each launch gets its own context id, so two tabs never mix two patients.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

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

from smartapp.audit import log as referral_log
from smartapp.db import LaunchContext, PendingAuthorization
from smartapp.launch import client as smart
from smartapp.launch.keys import KeyStoreError
from smartapp.launch.registrations import RegistrationError
from smartapp.services import current_services
from smartapp.web import browser_id, holds_browser_id, renew_browser_id

bp = Blueprint("launch", __name__)
log = logging.getLogger("handoff.launch")


def redirect_uri() -> str:
    return current_app.config["PUBLIC_URL"].rstrip("/") + "/callback"


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


def start_authorization(registration, launch_value: str | None):
    """Discovery, then redirect to the EHR's authorize endpoint; remember state and PKCE."""
    services = current_services()
    try:
        config = smart.discover(registration.iss, services.timeout)
        auth = smart.authorization_request(registration, config, redirect_uri(), launch_value)
    except smart.LaunchError as exc:
        log.warning("launch failed at discovery: %s", exc)
        abort(502, description=str(exc))
    with services.db.session() as db:
        db.add(
            PendingAuthorization(
                state=auth.state,
                browser_id=browser_id(),
                registration_id=registration.id,
                iss=registration.iss,
                code_verifier=auth.code_verifier,
                nonce=auth.nonce,
                token_endpoint=config.token_endpoint,
                jwks_uri=config.jwks_uri,
            )
        )
    return redirect(auth.url)


@bp.get("/.well-known/jwks.json")
def jwks():
    """Handoff's public keys, for EHRs that authenticate it with private_key_jwt."""
    response = jsonify(current_services().keys.public_jwks())
    response.headers["Cache-Control"] = "max-age=300"
    return response


@bp.get("/callback")
def callback():
    """Check state (known, this browser, unused, fresh), trade the code, verify the id_token."""
    services = current_services()
    state = request.args.get("state", "")
    with services.db.session() as db:
        pending = db.get(PendingAuthorization, state) if state else None
        if pending is not None:
            db.delete(pending)  # single use, whatever happens next
    if pending is None or not holds_browser_id(pending.browser_id):
        log.warning("callback refused: unknown, reused or foreign state")
        abort(
            400,
            description="This sign-in link is not valid (it was used already, or it was "
            "started in another browser). Launch Handoff again from the chart.",
        )
    ttl = timedelta(seconds=current_app.config["STATE_TTL_SECONDS"])
    created = (
        pending.created_at if pending.created_at.tzinfo else pending.created_at.replace(tzinfo=UTC)
    )
    if datetime.now(UTC) - created > ttl:
        log.warning("callback refused: state expired")
        abort(400, description="The sign-in took too long. Launch Handoff again from the chart.")
    if request.args.get("error"):
        said = smart.ehr_error(request.args.get("error"), request.args.get("error_description"))
        log.warning("callback: authorization denied by the EHR (%s)", said)
        abort(
            403,
            description=f"The EHR did not authorize Handoff for this patient. The EHR said: {said}",
        )
    code = request.args.get("code")
    if not code:
        abort(400, description="The EHR returned no authorization code.")
    registration = services.registry.by_id(pending.registration_id)
    if registration is None:
        abort(403, description="This EHR is no longer registered with Handoff.")
    try:
        token = smart.exchange_code(
            registration,
            pending.token_endpoint,
            redirect_uri(),
            code,
            pending.code_verifier,
            services.timeout,
            signing_key=services.signing_key(registration),
        )
    except (smart.LaunchError, KeyStoreError, RegistrationError) as exc:
        log.warning("callback failed at token exchange: %s", exc)
        abort(400, description=str(exc))
    try:
        claims = verified_identity(token, pending, registration)
    except smart.LaunchError as exc:
        log.warning("callback refused: %s", exc)
        abort(400, description=f"{exc} Handoff did not use the EHR's token.")
    if not claims.get("fhirUser"):
        log.warning("callback refused: identity token names no fhirUser")
        abort(
            400,
            description="The EHR did not say who you are (no fhirUser). Handoff records "
            "every decision under the user's name, so it cannot go on.",
        )
    if not token.get("patient"):
        log.warning("callback: token response carries no patient context")
        abort(400, description="The EHR did not say which patient this launch is for.")
    context_id = secrets.token_urlsafe(24)
    expires_in = token.get("expires_in")
    bound_to = renew_browser_id()  # a fresh session id for what this launch opens
    with services.db.session() as db:
        context = LaunchContext(
            id=context_id,
            browser_id=bound_to,
            registration_id=registration.id,
            iss=pending.iss,
            patient_id=str(token["patient"]),
            encounter_id=token.get("encounter"),
            user_ref=smart.fhir_user_reference(claims.get("fhirUser"), pending.iss),
            scope=token.get("scope", ""),
            need_patient_banner=1 if token.get("need_patient_banner", True) else 0,
            token_ciphertext=services.cipher.encrypt(token, context_id),
            token_endpoint=pending.token_endpoint,
            access_expires_at=(datetime.now(UTC) + timedelta(seconds=int(expires_in)))
            if expires_in
            else None,
        )
        db.add(context)
        referral_log.append_about(
            db,
            "launch",
            context,
            data={"scope": context.scope, "registration": registration.id},
            user_name=claims.get("name"),
        )
    log.info("launch ok: context=%s registration=%s", context_id[:8], registration.id)
    return redirect(url_for("screen.show", context_id=context_id))


def verified_identity(token: dict, pending: PendingAuthorization, registration) -> dict:
    """The id_token's claims, verified against the issuer's keys; no id_token is refused."""
    if not token.get("id_token"):
        raise smart.LaunchError("The EHR returned no identity token (id_token).")
    if not pending.jwks_uri:
        raise smart.LaunchError(
            "The EHR publishes no keys (jwks_uri) to verify the user's identity."
        )
    issuer = pending.iss
    return smart.verify_id_token(
        token["id_token"],
        pending.jwks_uri,
        issuer,
        registration.client_id,
        pending.nonce,
        current_services().timeout,
    )
