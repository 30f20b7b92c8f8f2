"""Configuration defaults. Order of precedence (Flask tutorial style): these defaults,
then `instance/config.py`, then `HANDOFF_*` environment variables, then a test dict."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The instance folder (instance/config.py, the SQLite database, generated keys) when neither
# `--instance-path` nor HANDOFF_INSTANCE_PATH names one; `handoff demo` uses it too: instance/
# in a checkout, Flask's <prefix>/var/smartapp-instance when installed from a wheel.
DEFAULT_INSTANCE = (
    REPO_ROOT / "instance"
    if (REPO_ROOT / "pyproject.toml").is_file()
    else Path(sys.prefix) / "var" / "smartapp-instance"
)
INSTANCE_ENV = "HANDOFF_INSTANCE_PATH"
# The catalog data Handoff ships (the sample catalog, the discharge sheet's words): catalog/
# of a checkout, or its copy inside an installed wheel (setup.py: smartapp/default_catalog/).
SHIPPED_CATALOG = (
    Path(__file__).resolve().parent / "default_catalog"
    if (Path(__file__).resolve().parent / "default_catalog").is_dir()
    else REPO_ROOT / "catalog"
)
# Where `handoff demo` serves Handoff unless told otherwise (the demo's PUBLIC_URL).
DEMO_PUBLIC_URL = "http://127.0.0.1:8700"


def resolve_instance_path(given: str | os.PathLike | None = None) -> Path:
    """The one place that decides the instance folder, for the app, the demo and every
    command: `given`, else HANDOFF_INSTANCE_PATH, else instance/ beside the package. Relative
    paths are taken from the current directory (Flask needs an absolute one)."""
    chosen = given or os.environ.get(INSTANCE_ENV) or DEFAULT_INSTANCE
    return Path(os.path.abspath(Path(chosen).expanduser()))


class Defaults:
    """Defaults that are safe for a local demo; production overrides them."""

    # Signing key for the browser's session cookie; generated into the instance folder if unset.
    SECRET_KEY: str | None = None
    # 32-byte AES-GCM key (urlsafe base64) for tokens at rest; generated into instance if unset.
    TOKEN_KEY: str | None = None
    # SQLAlchemy URL; None means a SQLite file in the instance folder.
    DATABASE_URL: str | None = None
    # The community resource catalog (FHIR HealthcareService/Organization/Location JSON).
    CATALOG_DIR: str = str(SHIPPED_CATALOG / "sample")
    # The patient's discharge sheet's words, one file per language (en.yaml, es.yaml; issue 13
    # item 7: the spec is silent on the wording, so it is data with its sources).
    AFTERCARE_SHEET_DIR: str = str(SHIPPED_CATALOG / "sheet")
    # Where EHR registrations (launch/*.yaml) live.
    LAUNCH_DIR: str = str(REPO_ROOT / "launch")
    # The rules directory: its packs/default.yaml is the pack the app runs, its valuesets/ the
    # value sets (env HANDOFF_RULES_DIR; `handoff rules ...` reads the same setting). None: the
    # rules Handoff ships (rules/ of the checkout, or their copy in the installed package).
    RULES_DIR: str | None = None
    # The app's public origin, used to build its redirect_uri (no trailing slash). Required
    # (a start-up error names it when unset), except in the demo.
    PUBLIC_URL: str | None = None
    # Timeouts (seconds) for every HTTP request to an EHR: (connect, read).
    FHIR_CONNECT_TIMEOUT: float = 5.0
    FHIR_READ_TIMEOUT: float = 20.0
    # Each EHR's SMART configuration and identity-token key set are kept this many seconds
    # instead of fetched on every launch (0: fetched every time). A new signing key's kid
    # fetches the key set again at once.
    SMART_DISCOVERY_CACHE_SECONDS: float = 300.0
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
    # Folder of Handoff's private signing keys (private_key_jwt) and of the generated
    # secrets.json (SECRET_KEY, TOKEN_KEY when not set); None: instance/keys. In production
    # with SQLite it must not lie in the database's folder (keys apart from data).
    KEYS_DIR: str | None = None
    # The browser's session cookie (Flask's settings): its name, and never readable by scripts.
    SESSION_COOKIE_NAME: str = "handoff_session"
    SESSION_COOKIE_HTTPONLY: bool = True
    # Secure and SameSite follow PUBLIC_URL unless set: on https the cookie is Secure and
    # SameSite=None so it survives inside an EHR's cross-site iframe; on a local http demo, Lax.
    SESSION_COOKIE_SECURE: bool | None = None
    SESSION_COOKIE_SAMESITE: str | None = None
    # The demo (`handoff demo`, tests): the sandbox EHR is its only registration, PUBLIC_URL
    # may default to the demo's, and keys may sit beside the data. Never set it in production.
    DEMO: bool = False
    # Launch contexts (patient and encounter ids, the user, the screen as shown, encrypted
    # tokens) older than this many days are deleted by `handoff launch purge` (run it daily);
    # contexts a queued write still needs are kept. The referral log is never purged.
    LAUNCH_CONTEXT_RETENTION_DAYS: int = 7
    # Show Alembic's INFO lines (each migration as it runs) in the log; `handoff --verbose`
    # turns them on for one command. Quiet otherwise.
    LOG_MIGRATIONS: bool = False
    # How long Sign waits (seconds) for the chart write before the page says "queued,
    # writing" and follows the write as it goes on (the spec sets no figure).
    SIGN_WAIT_SECONDS: float = 4.0
    # After a create that got no answer in time (Epic, Oracle Health: no conditional create),
    # how long (seconds) the EHR may still commit it: the outbox searches by Handoff's
    # identifier but sends no second create before this has passed (the spec sets no figure).
    OUTBOX_CONFIRM_WAIT_SECONDS: float = 120.0
    # An access token is refreshed this long before it expires: a share of its lifetime, at
    # most so many seconds (the spec sets no figure): a 2-minute token 12 s before its end, an
    # hour's token 60 s before. Without a refresh token a token is used until it expires.
    TOKEN_REFRESH_MARGIN_FRACTION: float = 0.1
    TOKEN_REFRESH_MARGIN_MAX_SECONDS: int = 60
    # Size limits against an EHR or a client sending too much (the spec sets no figures):
    # the largest request body Handoff takes (bytes; larger gets a 413 page; Handoff's own
    # forms are a few kB) ...
    MAX_CONTENT_LENGTH: int = 1024 * 1024
    # ... the most one chart read may bring (bytes of the EHR's answers, all pages and
    # Medications together; beyond it the read stops with a notice, or an error page if
    # nothing could be read) and the most resources it may hold (beyond: a notice) ...
    CHART_MAX_BYTES: int = 32 * 1024 * 1024
    CHART_MAX_RESOURCES: int = 20_000
    # ... and the longest text of one resource shown and logged (longer: cut, marked with the
    # full text's length and SHA-256, and a notice names the resource).
    RESOURCE_TEXT_MAX_CHARS: int = 1000
    # The most notices that each name a resource Handoff could not read; past it, one more
    # notice counts the rest by type (a chart of 10,000 malformed resources stays readable).
    CHART_MAX_NOTICES: int = 20
    # A staff session (coach, auditor, program manager) ends after this many seconds without a
    # request, and this many seconds after sign-in whatever happens (a shift); the spec sets no
    # figure. Sign-out ends it at once on the server.
    STAFF_SESSION_IDLE_SECONDS: int = 1800
    STAFF_SESSION_MAX_SECONDS: int = 43200
    # The Ed25519 key (PEM, generated on first use) that signs the referral log's checkpoints.
    # Outside the demo and the tests never in the SQLite database's folder (nothing is signed
    # then): whoever can copy or edit the data there could re-sign a rewritten log. None: the
    # instance folder (so, with the default database there, set it). Auditors verify with its
    # public half.
    AUDIT_SIGNING_KEY: str | None = None
    # A checkpoint is signed every this many events (and on demand: `handoff audit checkpoint`).
    AUDIT_CHECKPOINT_EVERY: int = 100
    # A file every committed checkpoint is appended to (JSON lines), to keep them off the box:
    # put it on an append-only share, or let a log shipper forward it; `handoff audit verify
    # --checkpoints FILE` checks the log against it. None: not kept here (auditors keep their
    # own copy with `handoff audit checkpoint --export FILE`).
    AUDIT_CHECKPOINT_SINK: str | None = None
    # Events per page of the console's referral log (search results and the full log).
    CONSOLE_PAGE_SIZE: int = 50
    # The dashboard's small-cell suppression (smartapp/staff/dashboard/suppression.py): a figure
    # with 1 to this minus one patients behind it shows as "<N", and figures it could be worked
    # out from as "*"; zero is shown.
    DASHBOARD_MIN_CELL: int = 5
    # Coach caseload (smartapp/staff/caseload.py). The most open handoffs (accepted or in
    # progress) one coach may hold; an accept or reassignment past it is refused and the
    # handoff waits in the team queue (the spec sets no figure: 8, a program sets its own).
    COACH_CASELOAD_CAP: int = 8
    # A coach counts as on shift when their staff session was used within this many minutes.
    COACH_ON_SHIFT_MINUTES: int = 60
    # Coaches counted on shift during the coverage hours even when not signed in (on call):
    # a list of {"user_ref": ..., "name": ...}. Empty: only signed-in coaches.
    COACH_ROSTER: tuple = ()
    # The coach program's staffed hours ("mon-fri 08:00-18:00", "sat 09:00-13:00"; an end of
    # 24:00 runs till midnight), in this time zone (None: the catalog's). Handoffs signed
    # outside them are the supervisor view's after-hours coverage (spec silent: a placeholder).
    COACH_COVERAGE_HOURS: tuple = ("mon-sun 08:00-20:00",)
    COACH_COVERAGE_TIMEZONE: str | None = None
    # The catalog program (HealthcareService id) the physician's screen names as the warm
    # line when no coach is free; None: the first peer-support program named "warm line".
    COACH_WARM_LINE_PROGRAM: str | None = None
    # Community partners (issue 11 item 7): the folder of partner files (launch/partners/*.yaml:
    # organisation, programs, backend client and JWKS); None: `partners/` in LAUNCH_DIR.
    PARTNERS_DIR: str | None = None
    # How long a token Handoff issues to a partner's backend client lasts (seconds; the spec
    # sets no figure: short, as SMART Backend Services advises).
    PARTNER_TOKEN_SECONDS: int = 300
    # The id_token claim naming a partner user's organisation (a partner id or its
    # Organization reference); without it the partner file's web_users list the user's sub.
    PARTNER_ORG_CLAIM: str = "handoff_organization"
    # Follow-up after the ED (smartapp/handoffs/followup.py): contacts planned this many days
    # after the visit (the issue's default 1, 3, 7, 30; a program sets its own), overdue this
    # many hours after they fall due (spec silent: 24), outcomes recorded at these days.
    FOLLOWUP_DAYS: tuple = (1, 3, 7, 30)
    FOLLOWUP_OVERDUE_HOURS: int = 24
    FOLLOWUP_OUTCOME_DAYS: tuple = (7, 30, 90)
    # How often the coach worklist page asks for changes (seconds; it replaces changed rows).
    WORKLIST_POLL_SECONDS: int = 5
    # CDS Hooks (issue 14, smartapp/cdshooks/): trusted CDS clients (one YAML per EHR: issuer,
    # JWKS URL or file, algorithms); None: `cds-clients/` in LAUNCH_DIR.
    CDS_CLIENTS_DIR: str | None = None
    # A hook call answers within this many seconds or with no card (spec silent: the CDC's
    # opioid CDS pilots needed answers under a second).
    CDS_BUDGET_SECONDS: float = 0.8
    # The card's indicator (info | warning | critical): the rule pack names none (spec silent).
    CDS_CARD_INDICATOR: str = "warning"
    # The code system of the card's override reasons (the pack's decline reason codes).
    CDS_OVERRIDE_SYSTEM: str = "urn:handoff:decline-reason"
    # order-select / order-sign answer only for draft orders in these value sets of the pack
    # (the pack has no opioid analgesic value set: a site adds one and names it here).
    CDS_ORDER_VALUESETS: tuple = ("naloxone", "moud-buprenorphine", "moud-methadone")
    # The longest life a CDS client's JWT may have (exp - iat, seconds; CDS Hooks: short).
    CDS_JWT_MAX_SECONDS: int = 300
    # How long a CDS client's JWKS fetched from its URL is kept (an unknown kid re-fetches it).
    CDS_JWKS_CACHE_SECONDS: int = 300
    # Operations (issue 15): the log's format, "json" (one object per line with the request
    # id; the default outside the demo) or "text" (the demo's default). None: by DEMO.
    LOG_FORMAT: str | None = None
    # /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>` when set (None: open,
    # as Prometheus scrapes inside the cluster; the figures hold no PHI).
    METRICS_TOKEN: str | None = None
    # Test each pooled database connection with a round trip before use (PostgreSQL; SQLite
    # never needs it). Off: a launch checks out dozens of sessions; connections are renewed
    # every 25 minutes and a dead one invalidates the pool (smartapp/db.py).
    DATABASE_PRE_PING: bool = False
