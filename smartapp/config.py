"""Configuration defaults. Order of precedence (Flask tutorial style): these defaults,
then `instance/config.py`, then `HANDOFF_*` environment variables, then a test dict."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class Defaults:
    """Defaults that are safe for a local demo; production overrides them."""

    # Signing key for the browser's session cookie; generated into the instance folder if unset.
    SECRET_KEY: str | None = None
    # 32-byte AES-GCM key (urlsafe base64) for tokens at rest; generated into instance if unset.
    TOKEN_KEY: str | None = None
    # SQLAlchemy URL; None means a SQLite file in the instance folder.
    DATABASE_URL: str | None = None
    # The community resource catalog (FHIR HealthcareService/Organization/Location JSON).
    CATALOG_DIR: str = str(REPO_ROOT / "catalog" / "sample")
    # Where EHR registrations (launch/*.yaml) live.
    LAUNCH_DIR: str = str(REPO_ROOT / "launch")
    # Rule pack used for suggestions.
    RULES_PACK: str = str(REPO_ROOT / "rules" / "packs" / "default.yaml")
    # The app's public origin, used to build its redirect_uri (no trailing slash).
    PUBLIC_URL: str = "http://127.0.0.1:8700"
    # Timeouts (seconds) for every HTTP request to an EHR: (connect, read).
    FHIR_CONNECT_TIMEOUT: float = 5.0
    FHIR_READ_TIMEOUT: float = 20.0
    # How far back observations are read for the chart (COWS, screens of this visit).
    CHART_OBSERVATION_DAYS: int = 30
    # A pending authorization (state) expires after this many seconds.
    STATE_TTL_SECONDS: int = 600
    # Identifier system for the referral identifiers Handoff assigns.
    REFERRAL_IDENTIFIER_SYSTEM: str = "urn:handoff:referral"
    # Staff sign-in (coaches, auditors, program managers): the hospital's OpenID Connect
    # provider. None disables the staff pages.
    STAFF_OIDC_ISSUER: str | None = None
    STAFF_OIDC_CLIENT_ID: str = "handoff-staff"
    STAFF_OIDC_CLIENT_SECRET: str | None = None
    STAFF_OIDC_CLIENT_SECRET_ENV: str | None = "HANDOFF_STAFF_CLIENT_SECRET"
    STAFF_ROLES_CLAIM: str = "handoff_roles"
    # Folder of Handoff's private signing keys (private_key_jwt); None: instance/keys.
    KEYS_DIR: str | None = None
    SESSION_COOKIE_NAME: str = "handoff_session"
    SESSION_COOKIE_HTTPONLY: bool = True
    # Secure and SameSite follow PUBLIC_URL unless set: on https the cookie is Secure and
    # SameSite=None so it survives inside an EHR's cross-site iframe; on a local http demo, Lax.
    SESSION_COOKIE_SECURE: bool | None = None
    SESSION_COOKIE_SAMESITE: str | None = None
    # How long Sign waits (seconds) for the chart write before the page says "queued,
    # writing" and follows the write as it goes on (the spec sets no figure).
    SIGN_WAIT_SECONDS: float = 4.0
    # An access token is refreshed this long before it expires: a share of its lifetime, at
    # most so many seconds (the spec sets no figure): a 2-minute token 12 s before its end, an
    # hour's token 60 s before. Without a refresh token a token is used until it expires.
    TOKEN_REFRESH_MARGIN_FRACTION: float = 0.1
    TOKEN_REFRESH_MARGIN_MAX_SECONDS: int = 60
