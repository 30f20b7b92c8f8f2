"""The sandbox EHR app factory: FHIR API, SMART authorization server and chart screens."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from smartapp.sandbox.auth import backend_controls
from smartapp.sandbox.auth import views as auth_views
from smartapp.sandbox.auth.backend import BACKEND_TOKEN_LIFETIME_S
from smartapp.sandbox.auth.models import OAuthStore
from smartapp.sandbox.auth.server import (
    ACCESS_TOKEN_LIFETIME_S,
    create_authorization_server,
    create_resource_protector,
)
from smartapp.sandbox.chart import views as chart_views
from smartapp.sandbox.config import SandboxClient
from smartapp.sandbox.context import Sandbox
from smartapp.sandbox.controls import CONTROL_PREFIX
from smartapp.sandbox.controls import bp as controls_bp
from smartapp.sandbox.db import Database
from smartapp.sandbox.faults import Faults, RequestLog
from smartapp.sandbox.fhir import api as fhir_api
from smartapp.sandbox.fhir.errors import FhirError
from smartapp.sandbox.fhir.service import FhirService
from smartapp.sandbox.fhir.write_rules import FHIR_REST, rules_for
from smartapp.sandbox.seed import needs_seeding
from smartapp.sandbox.seed import seed as seed_data

log = logging.getLogger(__name__)

_CORS_PATHS = ("/fhir", "/auth/token", "/auth/jwks", "/auth/userinfo")
SMART_STYLE = {
    "color_background": "#f3f5f8",
    "color_error": "#9b2c2c",
    "color_highlight": "#2b6cb0",
    "color_modal_backdrop": "",
    "color_success": "#276749",
    "color_text": "#1d2733",
    "dim_border_radius": "4px",
    "dim_font_size": "14px",
    "dim_spacing_size": "16px",
    "font_family_body": "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif",
    "font_family_heading": "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif",
}


def create_sandbox_app(
    base_url: str,
    database_url: str,
    clients: list[SandboxClient],
    shared_dir: Path,
    seed: tuple[str, ...] = ("scenarios", "synthea"),
    now: datetime | None = None,
    *,
    test_controls: bool = False,
    write_behaviour: str = FHIR_REST,
    pool_size: int | None = None,
) -> Flask:
    """Build the sandbox EHR on its own origin `base_url` (FHIR base = base_url + "/fhir").

    Seeds `seed` data sets from `shared_dir` when the database is empty or stale, shifting
    dates to `now` (default: the current UTC time), and registers `clients`.
    `test_controls` serves /_sandbox/ (fault switches, token expiry, request log, client
    registration and revocation: auth/backend_controls.py) for tests;
    off, those paths are 404.
    `write_behaviour` is how the FHIR API takes writes: "fhir-rest" (everything, like HAPI),
    "epic" or "oracle-health" (their refusals and constraints: fhir/write_rules.py); the
    `write_behaviour` fault switch overrides it while set.
    `pool_size`: the database pool's size (no overflow; default SQLAlchemy's 5 + 10). Each
    request takes one connection (db.py), so a small pool serves many concurrent requests.
    """
    rules_for(write_behaviour)  # ValueError for an unknown behaviour
    base_url = base_url.rstrip("/")
    fhir_base = f"{base_url}/fhir"
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    db = Database(database_url, pool_size=pool_size)
    db.create_all()
    service = FhirService(db, fhir_base)
    report = _seed(db, service, Path(shared_dir), tuple(seed), now or datetime.now(UTC))
    store = OAuthStore(db)
    store.register_clients(clients)
    key = store.signing_key()
    app = _flask_app(base_url, store.secret("flask_secret_key"))
    db.session.remove()  # start-up work is done; requests get their own sessions

    faults = Faults()
    service.write_rules = lambda: faults.write_rules(write_behaviour)
    server = create_authorization_server(
        store,
        fhir_base,
        key,
        style_url=f"{base_url}/smart-style.json",
        lifetime=lambda: int(app.config["SANDBOX_ACCESS_TOKEN_LIFETIME"]),
        token_url=f"{base_url}/auth/token",
        faults=faults,
        backend_lifetime=lambda: int(app.config[backend_controls.LIFETIME_SETTING]),
    )
    app.extensions["sandbox"] = Sandbox(
        base_url=base_url,
        db=db,
        service=service,
        store=store,
        server=server,
        protector=create_resource_protector(store, realm=fhir_base),
        fixed_now=now,
        faults=faults,
        requests=RequestLog(),
    )
    app.extensions["sandbox_fhir"] = fhir_api.FhirApi(
        service=service,
        authenticate=auth_views.authenticate,
        oauth_uris={
            "authorize": f"{base_url}/auth/authorize",
            "token": f"{base_url}/auth/token",
        },
    )
    app.extensions["sandbox_seed_report"] = report
    _register_blueprints(app, test_controls)
    _install_hooks(app, db)
    return app


def _seed(
    db: Database, service: FhirService, shared_dir: Path, sets: tuple[str, ...], now: datetime
) -> Any:
    """Seed `sets` from `shared_dir` when the database is empty or stale; the seed report, or
    None when nothing was seeded."""
    if needs_seeding(db, sets, now):
        return seed_data(db, service, shared_dir, sets, now)
    return None


def _flask_app(base_url: str, secret_key: str) -> Flask:
    """The Flask app with the sandbox's templates and its own session cookie."""
    app = Flask(
        __name__, template_folder=str(Path(__file__).parent / "templates"), static_folder=None
    )
    port = urlsplit(base_url).port or 80
    app.config.update(
        SECRET_KEY=secret_key,
        # Apps and the sandbox often share a host (127.0.0.1) and cookies ignore ports:
        # a distinct name keeps the EHR session apart from the app's own session cookie.
        SESSION_COOKIE_NAME=f"sandbox_ehr_session_{port}",
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        SANDBOX_ACCESS_TOKEN_LIFETIME=ACCESS_TOKEN_LIFETIME_S,
        # Backend services tokens (client_credentials): 5 minutes, as SMART recommends.
        SANDBOX_BACKEND_TOKEN_LIFETIME=BACKEND_TOKEN_LIFETIME_S,
    )
    return app


def _register_blueprints(app: Flask, test_controls: bool) -> None:
    """The FHIR API, the authorization server, the chart screens; the test controls only
    when asked (off, /_sandbox/ is 404)."""
    app.register_blueprint(fhir_api.bp)
    app.register_blueprint(auth_views.bp)
    app.register_blueprint(chart_views.bp)
    if test_controls:
        app.register_blueprint(controls_bp)
        app.register_blueprint(backend_controls.bp)
        _install_request_log(app, app.extensions["sandbox"].requests)


def _install_request_log(app: Flask, log_: RequestLog) -> None:
    """Log every request but the controls' own: method, path, time, auth scheme, status."""

    @app.before_request
    def _log_request() -> None:
        if request.path == CONTROL_PREFIX or request.path.startswith(f"{CONTROL_PREFIX}/"):
            return
        g.sandbox_log_entry = log_.record(
            request.method, request.path, request.headers.get("Authorization")
        )

    @app.after_request
    def _log_status(response: Response) -> Response:
        entry = g.pop("sandbox_log_entry", None)
        if entry is not None:
            log_.finish(entry, response.status_code)
        return response


def _install_hooks(app: Flask, db: Database) -> None:
    """Session cleanup, CORS for API paths, OperationOutcome for errors under /fhir."""

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        db.session.remove()

    @app.after_request
    def _cors(response: Response) -> Response:
        if request.path.startswith(_CORS_PATHS):
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Prefer, If-None-Exist, If-Match"
            )
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = (
                "Location, ETag, Last-Modified, WWW-Authenticate"
            )
        return response

    @app.get("/smart-style.json")
    def _smart_style() -> Response:
        return jsonify(SMART_STYLE)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response | HTTPException:
        if request.path.startswith("/fhir"):
            code = error.code or 500
            message = error.description or error.name
            if code == 405:
                message = f"{request.method} is not supported on {request.path}"
            return fhir_api.error_response(FhirError(code, message))
        return error

    @app.errorhandler(FhirError)
    def _fhir_error(error: FhirError) -> Response:
        return fhir_api.error_response(error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response | tuple[str, int]:
        if isinstance(error, HTTPException):
            return _http_error(error)  # type: ignore[return-value]
        log.exception("unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/fhir"):
            return fhir_api.error_response(FhirError(500, f"Internal error: {error}"))
        return "Internal error", 500
