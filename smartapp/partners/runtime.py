"""The partner services of one app: the partners folder (re-read on change) and the token
server, made on first use from the app's settings and kept in `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app

from smartapp.partners.authserver import TokenServer
from smartapp.partners.registry import PartnerDirectory, Partners
from smartapp.services import current_services

EXTENSION = "handoff-partners"
TOKEN_PATH = "/partner/auth/token"


@dataclass
class PartnerServices:
    directory: PartnerDirectory
    tokens: TokenServer

    def partners(self) -> Partners:
        return self.directory.current()


def partners_dir(app: Flask) -> Path:
    """PARTNERS_DIR, else `partners/` in the EHR registrations' folder (LAUNCH_DIR)."""
    return Path(app.config.get("PARTNERS_DIR") or Path(app.config["LAUNCH_DIR"]) / "partners")


def token_url(app: Flask) -> str:
    """The token endpoint's URL exactly as a partner's assertion must name it in `aud`."""
    return str(app.config["PUBLIC_URL"]).rstrip("/") + TOKEN_PATH


def partner_services() -> PartnerServices:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(EXTENSION)
    if found is None:
        directory = PartnerDirectory(partners_dir(app))
        tokens = TokenServer(
            db=current_services().db,
            partners=directory.current,
            token_url=token_url(app),
            token_seconds=int(app.config.get("PARTNER_TOKEN_SECONDS", 300)),
        )
        found = app.extensions[EXTENSION] = PartnerServices(directory, tokens)
    return found
