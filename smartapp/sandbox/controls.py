"""Test controls over HTTP (see faults.py for the state and the JSON they take and give).

Registered only when the app is built with `test_controls=True`; otherwise /_sandbox/* is 404.
"""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, jsonify, request

from smartapp.sandbox.context import sandbox
from smartapp.sandbox.faults import FaultError

CONTROL_PREFIX = "/_sandbox"

bp = Blueprint("sandbox_controls", __name__, url_prefix=CONTROL_PREFIX)


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/faults")
def get_faults() -> Response:
    """The current fault set."""
    return jsonify(sandbox().faults.snapshot())


@bp.post("/faults")
def set_faults() -> Response | tuple[Response, int]:
    """Replace the fault set with the posted JSON object."""
    body = request.get_json(silent=True)
    try:
        current = sandbox().faults.replace(body)
    except FaultError as error:
        return jsonify({"error": "invalid_faults", "error_description": str(error)}), 400
    return jsonify(current)


@bp.get("/write-rules")
def get_write_rules() -> Response:
    """The write rules in force (the behaviour plus the individual write switches)."""
    rules = asdict(sandbox().service.write_rules())
    rules["refuse_create"] = sorted(rules["refuse_create"])
    return jsonify(rules)


@bp.post("/expire-tokens")
def expire_tokens() -> Response:
    """Expire every live access token now."""
    return jsonify({"expired": sandbox().store.expire_access_tokens()})


@bp.get("/requests")
def get_requests() -> Response:
    """The request log, oldest first."""
    return jsonify(sandbox().requests.entries())


@bp.delete("/requests")
def clear_requests() -> tuple[str, int]:
    """Empty the request log."""
    sandbox().requests.clear()
    return "", 204
