"""The app's long-lived services (database, registrations, rule pack, token cipher), made once
per app and reached through `current_services()` by views and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app

from smartapp.catalog import Catalog, CatalogError, load_catalog
from smartapp.db import Database
from smartapp.engine import Pack, load_pack
from smartapp.keys import KeyStore
from smartapp.registrations import Registry, load_registry
from smartapp.tokens import TokenCipher

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

    def signing_key(self, registration):
        """The private key a private_key_jwt registration signs with (None otherwise)."""
        if registration.auth_method != "private_key_jwt":
            return None
        return self.keys.private_key(registration.key_id)

    @property
    def timeout(self) -> tuple[float, float]:
        config = current_app.config
        return (config["FHIR_CONNECT_TIMEOUT"], config["FHIR_READ_TIMEOUT"])


def init_app(app: Flask) -> None:
    url = (
        app.config.get("DATABASE_URL") or f"sqlite:///{Path(app.instance_path) / 'handoff.sqlite'}"
    )
    app.config["DATABASE_URL"] = url
    db = Database(url)
    db.create_all()
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
        registry=load_registry(app.config["LAUNCH_DIR"]),
        pack=load_pack(Path(app.config["RULES_PACK"])),
        cipher=TokenCipher(app.config["TOKEN_KEY"]),
        keys=KeyStore(app.config.get("KEYS_DIR") or Path(app.instance_path) / "keys"),
        catalog=catalog,
        catalog_error=catalog_error,
    )


def current_services() -> Services:
    return current_app.extensions[EXTENSION]
