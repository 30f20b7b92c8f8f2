"""/healthz, /readyz and /metrics: plain answers for load balancers, orchestrators and
Prometheus (no session, no cookie, no PHI)."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request

from smartapp.ops import health, metrics
from smartapp.services import current_services

bp = Blueprint("ops", __name__)

_rules_on_disk: dict[int, health.RulesOnDisk] = {}


def _on_disk() -> health.RulesOnDisk:
    from smartapp.rulestools.setting import load_app_pack

    return _rules_on_disk.setdefault(id(current_app), health.RulesOnDisk(load_app_pack))


@bp.get("/healthz")
def healthz() -> Response:
    """Alive: the process answers. Touches nothing else (no database)."""
    response = jsonify({"status": "ok"})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready to serve a launch: 200, or 503 with the checks that failed."""
    checks = health.readiness(current_services(), current_app.config, _on_disk())
    failed = [c.name for c in checks if not c.ok]
    body = {
        "status": "ready" if not failed else "not ready",
        "failed": failed,
        "checks": [c.as_json() for c in checks],
    }
    return jsonify(body), (503 if failed else 200)


@bp.get("/metrics")
def prometheus() -> Response | tuple[str, int]:
    """The Prometheus text exposition; behind a bearer token when METRICS_TOKEN is set."""
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return "metrics need the bearer token (METRICS_TOKEN)", 401
    body = metrics.exposition(current_services)
    return Response(body, mimetype=metrics.CONTENT_TYPE_LATEST.split(";")[0])
