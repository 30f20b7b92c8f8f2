"""Handoff: a SMART on FHIR app that links ED patients with substance use disorder to care."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from flask import Flask

from smartapp.config import Defaults


def create_app(test_config: dict | None = None, instance_path: str | None = None) -> Flask:
    """App factory: defaults, then instance/config.py, then HANDOFF_* env, then `test_config`."""
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    app.config.from_object(Defaults)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("HANDOFF")
    if os.environ.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = os.environ["DATABASE_URL"]
    if test_config:
        app.config.update(test_config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    _ensure_secrets(app)
    _cookie_policy(app)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from smartapp import services

    services.init_app(app)

    from smartapp import console_views, launch_views, screen_views, staff, web, worklist_views

    web.init_app(app)
    staff.init_app(app)
    app.register_blueprint(launch_views.bp)
    app.register_blueprint(screen_views.bp)
    app.register_blueprint(console_views.bp)
    app.register_blueprint(staff.bp)
    app.register_blueprint(worklist_views.bp)
    return app


def _cookie_policy(app: Flask) -> None:
    """HttpOnly always; Secure + SameSite=None on https (embedded in an EHR iframe)."""
    https = app.config["PUBLIC_URL"].startswith("https://")
    if app.config.get("SESSION_COOKIE_SECURE") is None:
        app.config["SESSION_COOKIE_SECURE"] = https
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "None" if https else "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True


def _ensure_secrets(app: Flask) -> None:
    """Generate the cookie key and token key once into the instance folder, never into git."""
    if app.config.get("SECRET_KEY") and app.config.get("TOKEN_KEY"):
        return
    from smartapp.tokens import TokenCipher

    path = Path(app.instance_path) / "secrets.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    if "SECRET_KEY" not in stored:
        stored["SECRET_KEY"] = secrets.token_urlsafe(48)
        changed = True
    if "TOKEN_KEY" not in stored:
        stored["TOKEN_KEY"] = TokenCipher.new_key()
        changed = True
    if changed:
        path.write_text(json.dumps(stored))
        path.chmod(0o600)
    for key in ("SECRET_KEY", "TOKEN_KEY"):
        if not app.config.get(key):
            app.config[key] = stored[key]
