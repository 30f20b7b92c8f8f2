"""The app's long-lived services (database, registrations, rule pack, token cipher, keys,
catalog, the EHR timeouts), made once per app from its settings and reached through
`current_services()` by views and the CLI. `Services` itself needs no Flask: the outbox
worker and the commands use it as they find it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, current_app
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy.exc import SQLAlchemyError

from smartapp.catalog import Catalog, CatalogError, load_catalog
from smartapp.config import Defaults
from smartapp.db import Database
from smartapp.engine import Pack
from smartapp.launch.client import EhrDocuments
from smartapp.launch.keys import KeyStore
from smartapp.launch.registrations import (
    Registration,
    RegistrationError,
    Registry,
    load_registry,
    missing_secrets,
)
from smartapp.launch.tokens import TokenCipher
from smartapp.rulestools.setting import load_app_pack
from smartapp.startup import StartupError

EXTENSION = "handoff"


@dataclass
class Services:
    db: Database
    registry: Registry
    pack: Pack
    cipher: TokenCipher
    keys: KeyStore
    catalog: Catalog | None
    catalog_error: str | None
    # Every HTTP request to an EHR: (connect, read) seconds (FHIR_*_TIMEOUT).
    timeout: tuple[float, float] = (Defaults.FHIR_CONNECT_TIMEOUT, Defaults.FHIR_READ_TIMEOUT)
    # The EHRs' SMART configurations and key sets, kept a while (SMART_DISCOVERY_CACHE_SECONDS).
    ehr_documents: EhrDocuments = field(default_factory=EhrDocuments)

    def signing_key(self, registration: Registration) -> RSAKey | ECKey | None:
        """The private key a private_key_jwt registration signs with (None otherwise)."""
        if registration.auth_method != "private_key_jwt" or not registration.key_id:
            return None
        return self.keys.private_key(registration.key_id)


def init_app(app: Flask, use: str = "serve") -> None:
    """Open the database as `use` needs it (see `smartapp.create_app`), then load the
    registrations, rule pack, catalog and keys; a start-up problem raises StartupError."""
    url = (
        app.config.get("DATABASE_URL") or f"sqlite:///{Path(app.instance_path) / 'handoff.sqlite'}"
    )
    app.config["DATABASE_URL"] = url
    db = Database(url, pre_ping=bool(app.config.get("DATABASE_PRE_PING")))
    if use in ("serve", "migrate"):
        db.migrate()
    elif use == "existing":
        require_existing(db)
    catalog, catalog_error = None, None
    try:
        catalog = load_catalog(app.config["CATALOG_DIR"])
    except CatalogError as exc:
        # A broken catalog must not stop referrals: the screen says so, and the coach program
        # runs `python -m smartapp.catalog check` to see every problem.
        catalog_error = str(exc).splitlines()[0]
        app.logger.error("community resource catalog not loaded: %s", catalog_error)
    app.extensions[EXTENSION] = Services(
        db=db,
        registry=registrations_for(app, strict=use == "serve"),
        pack=load_app_pack(app.config),
        cipher=TokenCipher(app.config["TOKEN_KEY"]),
        keys=KeyStore(keys_dir(app)),
        catalog=catalog,
        catalog_error=catalog_error,
        timeout=(app.config["FHIR_CONNECT_TIMEOUT"], app.config["FHIR_READ_TIMEOUT"]),
        ehr_documents=EhrDocuments(ttl=float(app.config["SMART_DISCOVERY_CACHE_SECONDS"])),
    )


def keys_dir(app: Flask) -> Path:
    """KEYS_DIR, else `keys/` in the instance folder: private JWKs and secrets.json."""
    return Path(app.config.get("KEYS_DIR") or Path(app.instance_path) / "keys").absolute()


def require_existing(db: Database) -> None:
    """Commands that read Handoff's data never create an empty database by mistake."""
    where = db.sqlite_file or db.engine.url.render_as_string(hide_password=True)
    try:
        found = db.exists()
    except SQLAlchemyError as exc:
        problem = exc.__class__.__name__
        raise StartupError(f"cannot open the database at {where}: {problem}") from exc
    if not found:
        raise StartupError(
            f"no Handoff database at {where}. Is this the app's instance? Pass "
            "--instance-path (or set HANDOFF_INSTANCE_PATH or DATABASE_URL) to the folder the "
            "app runs with; a new deployment runs `handoff db upgrade` first."
        )


def registrations_for(app: Flask, strict: bool) -> Registry:
    """The registrations; serving (`strict`) also refuses an empty allow-list outside the demo
    and a client secret missing from the environment, at start rather than at a launch.
    Commands that do not launch anyone (audit, keys) only warn about a broken folder."""
    folder = app.config["LAUNCH_DIR"]
    try:
        registry = load_registry(folder)
    except RegistrationError as exc:
        if strict:
            raise StartupError(str(exc)) from exc
        app.logger.warning("registrations not loaded: %s", exc)
        return Registry([])
    if not strict:
        return registry
    if not list(registry) and not app.config["DEMO"]:
        raise StartupError(
            f"no EHR registration in {folder} (LAUNCH_DIR): add one YAML file per EHR "
            "(see launch/samples/); only the demo runs without one."
        )
    problems = missing_secrets(registry)
    if problems:
        raise StartupError("; ".join(problems))
    return registry


def current_services() -> Services:
    return current_app.extensions[EXTENSION]
