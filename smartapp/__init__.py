"""Handoff: a SMART on FHIR app that links ED patients with substance use disorder to care."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path

from flask import Flask

from smartapp.config import DEMO_PUBLIC_URL, Defaults, resolve_instance_path
from smartapp.startup import StartupError, inside, private_folder, write_new_private_file
from smartapp.web.jsonprovider import FastJSONProvider
from smartapp.web.templating import DictKeyFirstEnvironment

# What a caller of create_app needs, from most to least.
USES = (
    "serve",  # the web app, the outbox worker: every start-up check, schema migrated
    "migrate",  # `handoff db upgrade`: schema migrated, no serving checks
    "existing",  # commands that read Handoff's data: the database must exist; none is created
    "config",  # commands that need only the settings (keys, audit with --database-url)
)


def create_app(
    test_config: dict | None = None, instance_path: str | None = None, use: str = "serve"
) -> Flask:
    """App factory: defaults, then instance/config.py, then HANDOFF_* env, then `test_config`.

    The instance folder is decided in one place (`resolve_instance_path`: the given path, else
    HANDOFF_INSTANCE_PATH, else instance/), so every command finds the app's data. `use` is one
    of USES. A setting that stops Handoff from working raises StartupError naming it.
    """
    if use not in USES:
        raise ValueError(f"use must be one of {USES}")
    app = Flask(
        __name__,
        instance_path=str(resolve_instance_path(instance_path)),
        instance_relative_config=True,
    )
    app.json = FastJSONProvider(app)  # request bodies and jsonify through orjson
    app.jinja_environment = DictKeyFirstEnvironment  # `a.b` on a dict: its key at once
    app.config.from_object(Defaults)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("HANDOFF")
    if os.environ.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = os.environ["DATABASE_URL"]
    if test_config:
        app.config.update(test_config)
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = f"sqlite:///{Path(app.instance_path) / 'handoff.sqlite'}"
    private_folder(Path(app.instance_path))
    _logging(app)
    _public_url(app, use)
    if use == "serve" and not app.config["DEMO"]:
        _keys_apart_from_data(app)
    _ensure_secrets(app)
    _cookie_policy(app)

    from smartapp import services

    services.init_app(app, use)

    from smartapp import web
    from smartapp.aftercare import views as aftercare_views
    from smartapp.aids import views as aids_views
    from smartapp.cdshooks import views as cds_views
    from smartapp.launch import views as launch_views
    from smartapp.partners import views as partner_views
    from smartapp.screen import views as screen_views
    from smartapp.staff import auth as staff
    from smartapp.staff import console, worklist_views
    from smartapp.staff.supervisor import views as supervisor_views

    web.init_app(app)
    staff.init_app(app)
    app.register_blueprint(launch_views.bp)
    app.register_blueprint(screen_views.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(staff.bp)
    app.register_blueprint(worklist_views.bp)
    app.register_blueprint(supervisor_views.bp)
    app.register_blueprint(partner_views.bp)
    app.register_blueprint(aids_views.bp)
    app.register_blueprint(aftercare_views.bp)
    app.register_blueprint(cds_views.bp)
    return app


def _logging(app: Flask) -> None:
    """INFO for Handoff's own log; Alembic's INFO lines only when LOG_MIGRATIONS asks."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    verbose = app.config["LOG_MIGRATIONS"]
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)


def _public_url(app: Flask, use: str) -> None:
    """The origin the redirect_uri is built on must be said, not guessed (except in the demo)."""
    if app.config.get("PUBLIC_URL"):
        return
    if app.config["DEMO"]:
        app.config["PUBLIC_URL"] = DEMO_PUBLIC_URL
    elif use == "serve":
        raise StartupError(
            "HANDOFF_PUBLIC_URL is not set: the origin EHRs and browsers reach Handoff at "
            "(e.g. https://handoff.hospital.org), from which its redirect_uri "
            "(<PUBLIC_URL>/callback) is built. Set PUBLIC_URL in instance/config.py or "
            "HANDOFF_PUBLIC_URL in the environment."
        )


def _keys_apart_from_data(app: Flask) -> None:
    """In production, a copy of the SQLite data must not carry the keys that unlock it."""
    from smartapp.audit.chain import signing_key_path
    from smartapp.db import sqlite_file
    from smartapp.services import keys_dir

    database = sqlite_file(app.config["DATABASE_URL"])
    if database is None:
        return
    data = database.parent
    locations = {"KEYS_DIR": keys_dir(app), "AUDIT_SIGNING_KEY": signing_key_path(app)}
    found = [f"{name} {path}" for name, path in locations.items() if inside(path, data)]
    if found:
        raise StartupError(
            f"keys beside the data: {', '.join(found)} in {data}, the folder of the SQLite "
            "database, so a copy of the data would carry the keys that unlock it. Set KEYS_DIR "
            "and AUDIT_SIGNING_KEY (HANDOFF_KEYS_DIR, HANDOFF_AUDIT_SIGNING_KEY) outside it, "
            "or DATABASE_URL elsewhere."
        )


def _cookie_policy(app: Flask) -> None:
    """HttpOnly always; Secure + SameSite=None on https (embedded in an EHR iframe)."""
    https = (app.config["PUBLIC_URL"] or "").startswith("https://")
    if app.config.get("SESSION_COOKIE_SECURE") is None:
        app.config["SESSION_COOKIE_SECURE"] = https
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "None" if https else "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True


def _ensure_secrets(app: Flask) -> None:
    """Generate the cookie key and token key once into KEYS_DIR/secrets.json (0600, never into
    git). Processes starting together agree: the first file written stands, the others read it."""
    if app.config.get("SECRET_KEY") and app.config.get("TOKEN_KEY"):
        return
    from smartapp.launch.tokens import TokenCipher
    from smartapp.services import keys_dir

    path = private_folder(keys_dir(app)) / "secrets.json"
    legacy = Path(app.instance_path) / "secrets.json"  # where versions before 9 kept it
    if not path.exists() and legacy.exists() and legacy != path:
        with contextlib.suppress(FileNotFoundError):  # another process moved it
            shutil.move(legacy, path)
    if not path.exists():
        fresh = {"SECRET_KEY": secrets.token_urlsafe(48), "TOKEN_KEY": TokenCipher.new_key()}
        write_new_private_file(path, json.dumps(fresh))
    path.chmod(0o600)
    stored = json.loads(path.read_text())
    for key in ("SECRET_KEY", "TOKEN_KEY"):
        if not app.config.get(key):
            app.config[key] = stored[key]
