"""Test controls for registered clients (served with the other /_sandbox/ controls only when
the app is built with `test_controls=True`):

- `POST /_sandbox/clients` with a SandboxClient as JSON (`client_id`, `redirect_uris`,
  `launch_url`, `name`, `auth_method`, `jwks_uri` or `jwks`, `backend_scopes`) registers or
  re-registers it -> 200 `{"client_id"}`; an invalid one -> 400 `{"error", "error_description"}`.
  So a test registers a backend services client once it knows where the app's JWKS is.
- `POST /_sandbox/clients/<client_id>/revoke` -> 200: the client is refused from now on and its
  live tokens are revoked; `POST /_sandbox/clients/<client_id>/keys/<kid>/revoke` -> 200: that
  key no longer authenticates it. 404 for an unknown client.
- `GET|POST /_sandbox/backend-token-lifetime` (`{"seconds": n}`, n >= 1) -> the lifetime of
  backend services tokens issued from now on (launch tokens: the `access_token_lifetime` fault).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from smartapp.sandbox.config import SandboxClient
from smartapp.sandbox.context import sandbox
from smartapp.sandbox.controls import CONTROL_PREFIX

bp = Blueprint("sandbox_client_controls", __name__, url_prefix=CONTROL_PREFIX)

LIFETIME_SETTING = "SANDBOX_BACKEND_TOKEN_LIFETIME"
_CLIENT_FIELDS = (
    "client_id",
    "redirect_uris",
    "launch_url",
    "name",
    "auth_method",
    "jwks_uri",
    "jwks",
    "backend_scopes",
    "client_secret",
)


def _refusal(description: str, status: int = 400) -> tuple[Response, int]:
    return jsonify({"error": "invalid_request", "error_description": description}), status


@bp.post("/clients")
def register_client() -> Response | tuple[Response, int]:
    """Register (or replace) one client from the posted JSON."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("client_id"), str):
        return _refusal("the body must be a JSON object with at least client_id")
    unknown = sorted(set(body) - set(_CLIENT_FIELDS))
    if unknown:
        return _refusal(f"unknown fields {unknown}; known: {', '.join(_CLIENT_FIELDS)}")
    fields: dict[str, Any] = {"redirect_uris": [], "launch_url": ""} | body
    try:
        client = SandboxClient(**fields)
    except (TypeError, ValueError) as error:
        return _refusal(str(error))
    sandbox().store.register_clients([client])
    return jsonify({"client_id": client.client_id})


@bp.post("/clients/<client_id>/revoke")
def revoke_client(client_id: str) -> Response | tuple[Response, int]:
    """Revoke a client and its live tokens."""
    if not sandbox().store.revoke_client(client_id):
        return _refusal(f"no client {client_id!r}", 404)
    return jsonify({"revoked": client_id})


@bp.post("/clients/<client_id>/keys/<kid>/revoke")
def revoke_key(client_id: str, kid: str) -> Response | tuple[Response, int]:
    """Revoke one key of a client."""
    if not sandbox().store.revoke_client(client_id, kid=kid):
        return _refusal(f"no client {client_id!r}", 404)
    return jsonify({"revoked": client_id, "kid": kid})


@bp.route("/backend-token-lifetime", methods=["GET", "POST"])
def backend_token_lifetime() -> Response | tuple[Response, int]:
    """Read or set the lifetime (seconds) of backend services tokens."""
    if request.method == "POST":
        seconds = (request.get_json(silent=True) or {}).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            return _refusal("seconds must be a positive whole number")
        current_app.config[LIFETIME_SETTING] = seconds
    return jsonify({"seconds": int(current_app.config[LIFETIME_SETTING])})
