"""The partner side over HTTP: discovery, the token endpoint (SMART Backend Services) and the
partner FHIR API (`/partner/fhir`: Task search and read with `_include` of its ServiceRequest
and minimal Patient, Task update by PUT or JSON Patch with If-Match). Bodies are FHIR R4 JSON;
errors are OperationOutcomes (OAuth errors at the token endpoint). Thin: the work is in
`authserver`, `shared` and `updates`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from smartapp.partners import shared as sharing
from smartapp.partners import updates
from smartapp.partners.authserver import AuthError, Grant, smart_configuration
from smartapp.partners.registry import PARTNER_SCOPES
from smartapp.partners.runtime import partner_services
from smartapp.services import current_services

bp = Blueprint("api", __name__, url_prefix="/partner")
log = logging.getLogger("handoff.partners.api")
FHIR_JSON = "application/fhir+json"
INCLUDES = {"Task:focus", "Task:patient", "Task:for"}


def fhir(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(json.dumps(body), status=status, mimetype=FHIR_JSON)
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def outcome(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}],
    }
    return fhir(body, status, headers)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return outcome(exc.code or 500, "processing", exc.description or exc.name)


@bp.get("/.well-known/smart-configuration")
def smart_config():
    body = smart_configuration(partner_services().tokens.token_url, PARTNER_SCOPES)
    return Response(json.dumps(body), mimetype="application/json")


@bp.post("/auth/token")
def token():
    try:
        body = partner_services().tokens.issue(request.form.to_dict())
        status = 200
    except AuthError as error:
        log.warning("partner token refused: %s: %s", error.error, error.description)
        body, status = error.body(), error.status
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.get("/fhir/metadata")
def metadata():
    services = partner_services()
    base = services.tokens.token_url.rsplit("/auth/token", 1)[0]
    oauth = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    return fhir(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "extension": [
                            {
                                "url": oauth,
                                "extension": [
                                    {"url": "token", "valueUri": services.tokens.token_url}
                                ],
                            }
                        ],
                        "service": [{"coding": [{"code": "SMART-on-FHIR"}]}],
                    },
                    "resource": [
                        {
                            "type": "Task",
                            "interaction": [
                                {"code": c} for c in ("read", "search-type", "update", "patch")
                            ],
                            "searchParam": [
                                {"name": "owner", "type": "reference"},
                                {"name": "status", "type": "token"},
                            ],
                            "searchInclude": sorted(INCLUDES),
                        },
                        {"type": "ServiceRequest", "interaction": [{"code": "read"}]},
                        {"type": "Patient", "interaction": [{"code": "read"}]},
                    ],
                }
            ],
            "implementation": {"description": "Handoff partner API", "url": f"{base}/fhir"},
        }
    )


def _grant(scope: str) -> Grant | Response:
    """The request's grant if it holds `scope`, else the refusal to send."""
    try:
        grant = partner_services().tokens.authenticate(request.headers.get("Authorization"))
    except AuthError as error:
        challenge = f'Bearer error="{error.error}"'
        return outcome(401, "login", error.description, {"WWW-Authenticate": challenge})
    if not grant.allows(scope):
        return outcome(403, "forbidden", f"this token has no {scope} scope")
    return grant


def _guarded(scope: str, work: Callable[[Grant], Response]) -> Response:
    """Run `work` with the grant, turning not-shared (404) and another partner's (403) into
    OperationOutcomes."""
    grant = _grant(scope)
    if isinstance(grant, Response):
        return grant
    try:
        return work(grant)
    except sharing.OtherPartner:
        log.warning("partner %s refused another partner's referral", grant.partner.id)
        return outcome(403, "forbidden", "This referral is not shared with your organisation.")
    except sharing.NotShared:
        return outcome(404, "not-found", "No such referral shared with your organisation.")


@bp.get("/fhir/Task")
def task_search():
    def work(grant: Grant) -> Response:
        partner = grant.partner
        owner = request.args.get("owner")
        statuses = _statuses(request.args.getlist("status"))
        includes = set(request.args.getlist("_include"))
        unknown = includes - INCLUDES
        if unknown:
            return outcome(400, "not-supported", f"_include {sorted(unknown)} is not supported")
        if owner and owner not in (partner.reference, partner.reference.split("/", 1)[1]):
            return fhir(_bundle([]))  # another owner's Tasks: none of them are yours
        with current_services().db.session() as session:
            found = sharing.search(session, partner, statuses)
            entries = []
            for item in found:
                sharing.log_read(session, partner, item, "api")
                entries.append(_entry(sharing.task(item, partner), "match"))
                if "Task:focus" in includes and grant.allows("system/ServiceRequest.rs"):
                    entries.append(_entry(sharing.service_request(item, partner), "include"))
                if includes & {"Task:patient", "Task:for"} and grant.allows("system/Patient.rs"):
                    entries.append(_entry(sharing.patient(item), "include"))
        return fhir(_bundle(entries, total=len(found)))

    return _guarded("system/Task.rs", work)


def _statuses(values: list[str]) -> set[str] | None:
    found = {s.strip() for value in values for s in value.split(",") if s.strip()}
    return found or None


def _entry(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    base = request.url_root.rstrip("/") + "/partner/fhir"
    return {
        "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }


def _bundle(entries: list[dict[str, Any]], total: int = 0) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries}


@bp.get("/fhir/Task/<task_id>")
def task_read(task_id: str):
    def work(grant: Grant) -> Response:
        body = sharing.read_task(current_services().db, grant.partner, task_id, "api")
        return fhir(body, headers={"ETag": f'W/"{body["meta"]["versionId"]}"'})

    return _guarded("system/Task.rs", work)


@bp.get("/fhir/ServiceRequest/<resource_id>")
def service_request_read(resource_id: str):
    def work(grant: Grant) -> Response:
        with current_services().db.session() as session:
            item = sharing.find(session, grant.partner, resource_id)
            sharing.log_read(session, grant.partner, item, "api")
            return fhir(sharing.service_request(item, grant.partner))

    return _guarded("system/ServiceRequest.rs", work)


@bp.get("/fhir/Patient/<resource_id>")
def patient_read(resource_id: str):
    def work(grant: Grant) -> Response:
        with current_services().db.session() as session:
            item = sharing.find(session, grant.partner, resource_id)
            sharing.log_read(session, grant.partner, item, "api")
            return fhir(sharing.patient(item))

    return _guarded("system/Patient.rs", work)


@bp.route("/fhir/Task/<task_id>", methods=["PUT", "PATCH"])
def task_update(task_id: str):
    def work(grant: Grant) -> Response:
        body = request.get_json(force=True, silent=True)
        patch = body if request.method == "PATCH" else None
        wanted = body if request.method == "PUT" else None
        if request.method == "PATCH" and not (request.mimetype or "").endswith("json-patch+json"):
            return outcome(415, "not-supported", "PATCH takes application/json-patch+json")
        try:
            task, changed = updates.update(
                current_services().db,
                grant.partner,
                task_id,
                wanted=wanted,
                patch=patch,
                if_match=request.headers.get("If-Match"),
            )
        except updates.Refused as refused:
            return outcome(refused.status, refused.code, refused.message)
        if changed:
            _deliver(task_id)
        return fhir(task, headers={"ETag": f'W/"{task["meta"]["versionId"]}"'})

    return _guarded("system/Task.u", work)


def _deliver(referral_id: str) -> None:
    """Try the EHR's Task update now; the outbox worker retries if the EHR is away."""
    from smartapp.writeback.worker import deliver_now

    try:
        deliver_now(current_services(), referral_id, current_app.config)
    except Exception:  # the update is committed and queued: the worker will deliver it
        log.exception("partner update queued; immediate delivery failed for %s", referral_id)


@bp.route("/fhir/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unsupported(rest: str):
    """Anything else under the partner API: an OperationOutcome, not the HTML error page; to
    an authenticated partner only (a caller without a token learns nothing of the API)."""
    grant = _grant("system/Task.rs")
    if isinstance(grant, Response) and grant.status_code == 401:
        return grant
    return outcome(
        404, "not-supported", f"{request.method} {rest.split('?')[0][:100]} is not offered"
    )
