"""Staff sign-in (coaches, auditors, program managers) with OpenID Connect against the
hospital's identity provider. authlib does the protocol (discovery, state, nonce, PKCE, id_token
checks); its state data (PKCE verifier, nonce) waits in Handoff's database, not in the cookie.
A signed-in staff member is a server-side session (smartapp.staff.sessions: idle and absolute
limits, ended for every copy of the cookie at sign-out); the cookie holds only its random token,
issued fresh at each sign-in. Never a token of the identity provider.

Roles come from a claim of the id_token (STAFF_ROLES_CLAIM, a list of strings): `coach`,
`auditor`, `program-manager`. Physicians use Handoff through the SMART launch, not here.
"""

from __future__ import annotations

import functools
import logging
import os

from authlib.integrations.flask_client import OAuth
from flask import Blueprint, abort, current_app, g, redirect, request, session, url_for

from smartapp.services import current_services
from smartapp.staff import sessions as staff_sessions
from smartapp.staff.identity import ROLES, record_sign_in, safe_next, staff_from_claims

bp = Blueprint("staff", __name__, url_prefix="/staff")
log = logging.getLogger("handoff.staff")
__all__ = [
    "ROLES",
    "bp",
    "current_staff",
    "init_app",
    "limits",
    "open_fresh_session",
    "require_role",
    "signed_in_claims",
    "staff_client",
]
#: The session cookie's key for the staff session's token.
SESSION_KEY = "staff_session"


def init_app(app) -> None:
    # One registry per app: authlib caches a registered client for good, so a registry shared
    # by two apps in one process would sign staff in at the first app's identity provider.
    oauth = OAuth()
    oauth.init_app(app, cache=staff_sessions.SignInStore(lambda: current_services().db))
    issuer = app.config.get("STAFF_OIDC_ISSUER")
    if not issuer:
        return
    secret = app.config.get("STAFF_OIDC_CLIENT_SECRET") or os.environ.get(
        app.config.get("STAFF_OIDC_CLIENT_SECRET_ENV") or "", ""
    )
    oauth.register(
        "staff",
        client_id=app.config["STAFF_OIDC_CLIENT_ID"],
        client_secret=secret or None,
        server_metadata_url=f"{issuer.rstrip('/')}/.well-known/openid-configuration",
        client_kwargs={
            "scope": "openid profile fhirUser",
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic" if secret else "none",
        },
        overwrite=True,
    )


def staff_client():
    """This app's OpenID Connect client for staff sign-in; None when none is configured."""
    oauth = current_app.extensions.get("authlib.integrations.flask_client")
    return oauth.create_client("staff") if oauth is not None else None


def limits() -> staff_sessions.Limits:
    from datetime import timedelta

    config = current_app.config
    return staff_sessions.Limits(
        idle=timedelta(seconds=config["STAFF_SESSION_IDLE_SECONDS"]),
        absolute=timedelta(seconds=config["STAFF_SESSION_MAX_SECONDS"]),
    )


def current_staff() -> dict | None:
    """The signed-in staff member (sub, name, user_ref, roles) of a live server-side session,
    else None (a token whose session ended is dropped from the cookie)."""
    if "staff" not in g:
        token = session.get(SESSION_KEY)
        found = None
        if isinstance(token, str):
            found = staff_sessions.find_session(current_services().db, token, limits())
            if found is None:
                log.info("staff session ended (signed out, idle or too old)")
                session.pop(SESSION_KEY, None)
        g.staff = found
    return g.staff


def require_role(*roles: str):
    """Only signed-in staff with one of `roles`; others get sign-in or a clear refusal."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            staff = current_staff()
            if staff is None:
                # the query too: a filtered page (?closed=1, a dashboard period) comes back as asked
                return redirect(url_for("staff.login", next=request.full_path.removesuffix("?")))
            if not set(staff.get("roles", [])) & set(roles):
                log.warning("staff refused: role %s needed, user has %s", roles, staff.get("roles"))
                abort(403, description="Your role does not allow this page.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


@bp.get("/login")
def login():
    client = staff_client()
    if client is None:
        abort(404, description="Staff sign-in is not configured (STAFF_OIDC_ISSUER).")
    session["staff_next"] = safe_next(request.args.get("next"))
    redirect_uri = current_app.config["PUBLIC_URL"].rstrip("/") + url_for("staff.callback")
    # prompt=login: a workstation's EHR session (often the physician's) is not the coach's.
    return client.authorize_redirect(redirect_uri, prompt="login")


def signed_in_claims(who: str) -> dict:
    """The id_token claims of the identity provider's answer to a sign-in (the callback of
    the staff pages and of the partner page, `who` naming it in the log); the request ends
    with 404 (no sign-in configured), 403 (refused) or 400 (state, code or id_token bad)."""
    client = staff_client()
    if client is None:
        abort(404)
    if request.args.get("error"):
        log.warning("%s sign-in denied by the identity provider", who)
        abort(403, description="The identity provider did not sign you in.")
    try:
        token = client.authorize_access_token()
    except Exception as exc:  # authlib: mismatching state, bad id_token, refused code...
        log.warning("%s sign-in failed: %s", who, exc.__class__.__name__)
        abort(400, description="Sign-in failed. Start again.")
    return token.get("userinfo") or {}


def open_fresh_session(staff: dict) -> None:
    """Sign `staff` in: the browser's previous staff session ends, nothing of it carries over,
    and the cookie gets a fresh token (a token planted before sign-in opens nothing)."""
    _end_staff_session()
    session.clear()
    session[SESSION_KEY] = staff_sessions.open_session(current_services().db, staff, limits())
    g.staff = staff


@bp.get("/callback")
def callback():
    claims = signed_in_claims("staff")
    staff = staff_from_claims(claims, current_app.config.get("STAFF_ROLES_CLAIM", "handoff_roles"))
    target = safe_next(session.get("staff_next"))  # checked again: the cookie is the browser's
    open_fresh_session(staff)
    record_sign_in(current_services().db, staff)
    log.info("staff signed in with roles %s", staff["roles"])
    return redirect(target or url_for("staff.home"))


@bp.get("/")
def home():
    staff = current_staff()
    if staff is None:
        return redirect(url_for("staff.login"))
    if "coach" in staff["roles"]:
        return redirect(url_for("worklist.index"))
    if "supervisor" in staff["roles"]:
        return redirect(url_for("supervisor.index"))
    if "auditor" in staff["roles"] or "program-manager" in staff["roles"]:
        return redirect(url_for("console.index"))
    abort(403, description="Your account has no Handoff staff role.")


@bp.post("/logout")
def logout():
    from smartapp.web import check_csrf

    check_csrf()
    _end_staff_session()
    session.clear()
    return redirect(url_for("launch.start_page"))


def _end_staff_session() -> None:
    """Delete this browser's staff session on the server (a copied cookie is refused after)."""
    token = session.get(SESSION_KEY)
    if isinstance(token, str):
        staff_sessions.end_session(current_services().db, token)
    g.pop("staff", None)
