"""The FHIR REST blueprint: HTTP in, FhirService call, FHIR JSON out.

Authentication is injected: the app factory sets `authenticate`, a callable returning the
caller's `Access` or raising FhirError(401). Every error leaves as an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime

import orjson
from flask import Blueprint, Response, current_app, g, request

from smartapp.sandbox.db import resources
from smartapp.sandbox.fhir.access import Access
from smartapp.sandbox.fhir.capability import capability_statement
from smartapp.sandbox.fhir.errors import FhirError
from smartapp.sandbox.fhir.service import FhirService, Outcome
from smartapp.sandbox.fhirtime import parse_instant

FHIR_JSON = "application/fhir+json; charset=utf-8"

bp = Blueprint("fhir", __name__, url_prefix="/fhir")


@dataclass
class FhirApi:
    """What the blueprint needs from the app: the service, auth and the OAuth URLs."""

    service: FhirService
    authenticate: Callable[[], Access]
    oauth_uris: dict[str, str]


def _api() -> FhirApi:
    return current_app.extensions["sandbox_fhir"]


def fhir_response(body: dict | None, status: int = 200, headers: dict | None = None) -> Response:
    """A FHIR JSON response (an empty body for None)."""
    data = orjson.dumps(body) if body is not None else b""
    response = Response(data, status=status, mimetype=None, headers=headers or {})
    if body is not None:
        response.headers["Content-Type"] = FHIR_JSON
    return response


def error_response(err: FhirError) -> Response:
    """OperationOutcome response for an error."""
    return fhir_response(err.outcome(), err.status, err.headers)


@bp.errorhandler(FhirError)
def _on_fhir_error(err: FhirError) -> Response:
    return error_response(err)


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in ("fhir.metadata",) or request.method == "OPTIONS":
        return
    g.fhir_access = _api().authenticate()


def _access() -> Access:
    return g.fhir_access


def _body() -> object:
    data = request.get_data()
    if not data.strip():
        raise FhirError(400, "The request has no body", "structure")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FhirError(400, f"Malformed JSON: {exc}", "structure") from None


def _prefer_return() -> str:
    prefer = request.headers.get("Prefer", "")
    for part in prefer.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "return":
            return value.strip('"')
    return "representation"


def _strict() -> bool:
    return "handling=lenient" not in request.headers.get("Prefer", "")


def _single(outcome: Outcome) -> Response:
    """Response for one resource: Location/ETag/Last-Modified headers and Prefer handling."""
    service = _api().service
    headers: dict[str, str] = {}
    if outcome.location and outcome.status in (200, 201):
        if request.method in ("POST", "PUT"):
            headers["Location"] = f"{service.fhir_base}/{outcome.location}"
        headers["ETag"] = outcome.etag or ""
    if outcome.last_updated:
        moment = parse_instant(outcome.last_updated)
        if moment is not None:
            headers["Last-Modified"] = format_datetime(moment, usegmt=True)
    if outcome.status == 204:
        return fhir_response(None, 204, headers)
    prefer = _prefer_return() if request.method in ("POST", "PUT") else "representation"
    if prefer == "minimal":
        return fhir_response(None, outcome.status, headers)
    if prefer == "OperationOutcome":
        body = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"{outcome.location} ({outcome.status})",
                }
            ],
        }
        return fhir_response(body, outcome.status, headers)
    return fhir_response(outcome.resource, outcome.status, headers)


@bp.get("/metadata")
def metadata() -> Response:
    """CapabilityStatement (public)."""
    api = _api()
    with api.service.db.read() as conn:
        stored = conn.execute(resources.select().with_only_columns(resources.c.type).distinct())
        types = [row[0] for row in stored]
    return fhir_response(
        capability_statement(
            api.service.fhir_base, api.oauth_uris, types, rules=api.service.write_rules()
        )
    )


@bp.post("")
@bp.post("/")
def bundle() -> Response:
    """transaction or batch Bundle."""
    result = _api().service.process_bundle(
        _body(), _access(), minimal=_prefer_return() == "minimal"
    )
    return fhir_response(result)


@bp.get("/<rtype>")
def search(rtype: str) -> Response:
    """GET Type?params."""
    service = _api().service
    with service.db.read() as conn:
        result = service.search(
            conn, rtype, request.args.items(multi=True), _access(), strict=_strict()
        )
    return fhir_response(result)


@bp.post("/<rtype>/_search")
def search_post(rtype: str) -> Response:
    """POST Type/_search with form-encoded parameters (and any in the URL)."""
    service = _api().service
    pairs = list(request.args.items(multi=True)) + list(request.form.items(multi=True))
    with service.db.read() as conn:
        result = service.search(conn, rtype, pairs, _access(), strict=_strict())
    return fhir_response(result)


@bp.get("/Patient/<pid>/<rtype>")
def compartment_search(pid: str, rtype: str) -> Response:
    """GET Patient/id/Type?params: search inside one patient's compartment (and
    GET Patient/id/_history, which this route would otherwise take)."""
    if rtype == "_history":
        return instance_history("Patient", pid)
    service = _api().service
    with service.db.read() as conn:
        result = service.search(
            conn,
            rtype,
            request.args.items(multi=True),
            _access(),
            strict=_strict(),
            compartment=pid,
        )
    return fhir_response(result)


@bp.post("/<rtype>")
def create(rtype: str) -> Response:
    """POST Type (If-None-Exist honoured)."""
    service = _api().service
    body = _body()
    with service.db.write() as conn:
        outcome = service.create(
            conn, rtype, body, _access(), if_none_exist=request.headers.get("If-None-Exist")
        )
    return _single(outcome)


@bp.get("/<rtype>/<rid>")
def read(rtype: str, rid: str) -> Response:
    """GET Type/id."""
    service = _api().service
    with service.db.read() as conn:
        outcome = service.read(conn, rtype, rid, _access())
    return _single(outcome)


@bp.get("/<rtype>/<rid>/_history/<vid>")
def vread(rtype: str, rid: str, vid: str) -> Response:
    """GET Type/id/_history/vid."""
    service = _api().service
    with service.db.read() as conn:
        outcome = service.vread(conn, rtype, rid, vid, _access())
    return _single(outcome)


@bp.get("/<rtype>/<rid>/_history")
def instance_history(rtype: str, rid: str) -> Response:
    """GET Type/id/_history (`_count`, default 50): the versions, newest first."""
    service = _api().service
    raw = request.args.get("_count", "50")
    count = int(raw) if raw.isdigit() and int(raw) > 0 else 50
    with service.db.read() as conn:
        result = service.history(conn, rtype, rid, _access(), count=min(count, 200))
    return fhir_response(result)


@bp.put("/<rtype>/<rid>")
def update(rtype: str, rid: str) -> Response:
    """PUT Type/id (If-Match honoured)."""
    service = _api().service
    body = _body()
    with service.db.write() as conn:
        outcome = service.update(
            conn, rtype, rid, body, _access(), if_match=request.headers.get("If-Match")
        )
    return _single(outcome)


@bp.delete("/<rtype>/<rid>")
def delete(rtype: str, rid: str) -> Response:
    """DELETE Type/id."""
    service = _api().service
    with service.db.write() as conn:
        outcome = service.delete(conn, rtype, rid, _access())
    return _single(outcome)
