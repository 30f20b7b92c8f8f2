"""CDS Hooks endpoints (web layer only): discovery, the hook services, feedback, and CORS.

Every call's JWT is checked first (`security.Verifier`): an unknown issuer, a bad signature,
a wrong `aud`, an expired or replayed JWT get 401 before anything else is read. Then the
Flask-free services answer (`service.answer`, `feedback.apply`). CORS: only the origins the
trusted clients' files name are allowed (no wildcard), with the headers CDS Hooks calls need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from smartapp.cdshooks import discovery, feedback, service
from smartapp.cdshooks.clients import CdsClientError, CdsClients, load_clients
from smartapp.cdshooks.security import Refused, Verifier, fetch_jwks
from smartapp.cdshooks.writer import writer_for
from smartapp.screen.views import deliver_in_background
from smartapp.services import current_services
from smartapp.web.jws import JwksCache

bp = Blueprint("cdshooks", __name__, url_prefix="/cds-services")
log = logging.getLogger("handoff.cdshooks")
EXTENSION = "handoff-cds"


@dataclass
class CdsRuntime:
    settings: discovery.CdsSettings
    clients: CdsClients
    verifier: Verifier


def clients_dir(app: Flask) -> Path:
    """CDS_CLIENTS_DIR, else `cds-clients/` in the EHR registrations' folder (LAUNCH_DIR)."""
    return Path(app.config.get("CDS_CLIENTS_DIR") or Path(app.config["LAUNCH_DIR"]) / "cds-clients")


def runtime() -> CdsRuntime:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(EXTENSION)
    if found is None:
        settings = discovery.CdsSettings.from_config(app.config)
        try:
            clients = load_clients(clients_dir(app))
        except CdsClientError as exc:  # no client is trusted; every call is refused (401)
            log.error("CDS clients not loaded, none is trusted: %s", exc)
            clients = CdsClients([])
        verifier = Verifier(
            db=current_services().db,
            clients=lambda: clients,
            max_seconds=settings.jwt_max_seconds,
            jwks=JwksCache(fetch_jwks, ttl=float(app.config["CDS_JWKS_CACHE_SECONDS"])),
        )
        # The calls' writes append to the referral log in the app's context (its signer).
        writer_for(current_services().db, app.app_context)
        found = app.extensions[EXTENSION] = CdsRuntime(settings, clients, verifier)
    return found


def refused(reason: str) -> tuple[Response, int]:
    log.warning("CDS call refused: %s", reason)
    response = jsonify({"error": "unauthorized", "reason": reason})
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response, 401


def verified(audience: str):
    try:
        return runtime().verifier.verify(request.headers.get("Authorization"), audience)
    except Refused as exc:
        return refused(str(exc))


@bp.after_request
def cors(response: Response) -> Response:
    """CORS for a browser-based CDS client whose origin a trusted client's file names."""
    origin = request.headers.get("Origin")
    if origin and origin in runtime().clients.origins():
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Max-Age"] = "600"
        response.headers.add("Vary", "Origin")
    return response


@bp.route("", methods=["GET", "OPTIONS"])
def services_list():
    if request.method == "OPTIONS":
        return "", 204
    client = verified(runtime().settings.service_url())
    if isinstance(client, tuple):
        return client
    return jsonify(discovery.discovery())


@bp.route("/<service_id>", methods=["POST", "OPTIONS"])
def call(service_id: str):
    if request.method == "OPTIONS":
        return "", 204
    rt = runtime()
    client = verified(rt.settings.service_url(service_id))
    if isinstance(client, tuple):
        return client
    hook = discovery.BY_ID.get(service_id)
    if hook is None:
        return jsonify({"error": "not-found", "reason": f"no CDS service {service_id}"}), 404
    try:
        body = service.answer(
            current_services(), rt.settings, client, hook, request.get_json(silent=True)
        )
    except service.BadRequest as exc:
        return jsonify({"error": "bad-request", "reason": str(exc)}), 400
    except service.PreconditionFailed as exc:
        return jsonify({"error": "precondition-failed", "reason": str(exc)}), 412
    except Exception:  # an EHR waits on this call: no card rather than an error page
        log.exception("CDS call answered without a card: unexpected error (service %s)", service_id)
        return jsonify(service.NO_CARDS)
    return jsonify(body)


@bp.route("/<service_id>/feedback", methods=["POST", "OPTIONS"])
def call_feedback(service_id: str):
    if request.method == "OPTIONS":
        return "", 204
    rt = runtime()
    client = verified(rt.settings.service_url(service_id, feedback=True))
    if isinstance(client, tuple):
        return client
    if service_id not in discovery.BY_ID:
        return jsonify({"error": "not-found", "reason": f"no CDS service {service_id}"}), 404
    services = current_services()
    try:
        outcome = feedback.apply(
            services, rt.settings, client, service_id, request.get_json(silent=True)
        )
    except service.BadRequest as exc:
        return jsonify({"error": "bad-request", "reason": str(exc)}), 400
    for referral_id in outcome.deliver:
        deliver_in_background(referral_id, "cds")  # as the screen's Sign does
    return jsonify({"cards": outcome.cards})
