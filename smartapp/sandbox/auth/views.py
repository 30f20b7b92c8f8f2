"""Auth blueprint: SMART and OpenID discovery, /auth/authorize, /auth/token, JWKS,
/auth/userinfo, EHR sign-in.

Protocol decisions are authlib's (auth/server.py); this module only does HTTP and screens:
EHR launches by the signed-in user are approved without a consent page, as EHRs do for
provider apps, and so are plain OpenID Connect sign-ins (`openid profile fhirUser`, no
launch, no FHIR scope: the hospital identity provider for Handoff's staff pages); a
standalone launch gets an approval page (CSRF-protected) with a patient picker when
`launch/patient` is asked for. The sign-in page (CSRF-protected) offers every sandbox user.
The fault switches of faults.py that concern discovery and consent are applied here.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import MissingAuthorizationError, scope_to_list
from authlib.oauth2.rfc6750 import InsufficientScopeError
from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from smartapp.sandbox.auth.client_auth import ALGORITHMS
from smartapp.sandbox.auth.models import USERS, EhrUser
from smartapp.sandbox.auth.scopes import CONTEXT_SCOPES, ScopeAccess, is_plain_openid
from smartapp.sandbox.auth.server import ADVERTISED_AUTH_METHODS, user_claims
from smartapp.sandbox.chart.data import picker_patients
from smartapp.sandbox.config import DEMO_PHYSICIAN_ID
from smartapp.sandbox.context import sandbox
from smartapp.sandbox.fhir.access import Access
from smartapp.sandbox.fhir.errors import FhirError

bp = Blueprint("auth", __name__)

CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-banner",
    "context-style",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "permission-offline",
    "permission-online",
    "sso-openid-connect",
]
EXAMPLE_SCOPES = [
    "patient/*.read",
    "patient/*.rs",
    "patient/*.cruds",
    "patient/*.write",
    "user/*.read",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "system/*.cruds",
]
EXAMPLE_SCOPES_V1 = [
    "patient/*.read",
    "patient/*.write",
    "user/*.read",
    "user/*.write",
    "system/*.read",
    "system/*.write",
]
#: Grants of the token endpoint (client_credentials: SMART Backend Services, auth/backend.py).
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials"]
CSRF_FIELD = "csrf_token"
#: The sign-in form's field naming the user to sign in as (one submit button per user).
USER_FIELD = "user"
#: Claims the id_token carries (and /auth/userinfo answers with).
CLAIMS_SUPPORTED = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "name",
    "fhirUser",
    "handoff_roles",
]


# -- EHR session -------------------------------------------------------------------------


def current_user() -> EhrUser | None:
    """The EHR user signed in with the sandbox session cookie."""
    return USERS.get(session.get("user", ""))


def sign_in(user_id: str = DEMO_PHYSICIAN_ID) -> EhrUser:
    """Start an EHR session for `user_id` (the demo physician by default)."""
    session["user"] = user_id
    session.permanent = True
    return USERS[user_id]


def _local_target(target: str | None) -> str:
    """`target` when it is a path on this origin, else the ED track board."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("chart.patients")


@bp.route("/auth/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Sign-in page: pick the sandbox user to be (one button each), then back to `next`.

    The form (POST, CSRF-protected) sends `csrf_token`, `next` and `user` (the button's
    value, a user id; without it, the demo physician).
    """
    target = _local_target(request.values.get("next"))
    if request.method == "POST":
        if not csrf_ok():
            message = "The form was not sent from this EHR's page (CSRF token missing or wrong)"
            return render_template("auth_error.html", error=message), 400
        user_id = request.form.get(USER_FIELD) or DEMO_PHYSICIAN_ID
        if user_id not in USERS:
            return render_template("auth_error.html", error=f"No user {user_id!r}"), 400
        sign_in(user_id)
        return redirect(target)
    return render_template(
        "login.html",
        next=target,
        users=list(USERS.values()),
        user=current_user(),
        csrf_token=csrf_token(),
    )


@bp.post("/auth/logout")
def logout() -> ResponseReturnValue:
    """End the EHR session."""
    session.clear()
    return redirect(url_for("auth.login"))


# -- discovery -----------------------------------------------------------------------------


@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART App Launch discovery document (faults: smart_config_unavailable,
    advertise_v1_only)."""
    auth = sandbox()
    if auth.faults.on("smart_config_unavailable"):
        abort(404, description="No SMART configuration here (sandbox fault)")
    v1_only = auth.faults.on("advertise_v1_only")
    capabilities = [c for c in CAPABILITIES if not (v1_only and c == "permission-v2")]
    return jsonify(
        {
            "issuer": auth.fhir_base,
            "jwks_uri": auth.url("/auth/jwks"),
            "authorization_endpoint": auth.url("/auth/authorize"),
            "token_endpoint": auth.url("/auth/token"),
            "token_endpoint_auth_methods_supported": ADVERTISED_AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
            "grant_types_supported": GRANT_TYPES,
            "scopes_supported": list(CONTEXT_SCOPES)
            + (EXAMPLE_SCOPES_V1 if v1_only else EXAMPLE_SCOPES),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": capabilities,
        }
    )


@bp.get("/fhir/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect discovery for the id_token issuer (the FHIR base): also the hospital
    identity provider of Handoff's staff pages (`handoff_roles` claim)."""
    auth = sandbox()
    return jsonify(
        {
            "issuer": auth.fhir_base,
            "authorization_endpoint": auth.url("/auth/authorize"),
            "token_endpoint": auth.url("/auth/token"),
            "userinfo_endpoint": auth.url("/auth/userinfo"),
            "jwks_uri": auth.url("/auth/jwks"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ADVERTISED_AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
            "scopes_supported": ["openid", "fhirUser", "profile"],
            "claims_supported": CLAIMS_SUPPORTED,
            "code_challenge_methods_supported": ["S256"],
        }
    )


@bp.get("/auth/jwks")
def jwks() -> Response:
    """Public signing key(s) for id_token verification."""
    key = sandbox().server.key
    public = dict(key.as_dict(private=False))
    public.update({"kid": key.thumbprint(), "alg": "RS256", "use": "sig"})
    return jsonify({"keys": [public]})


# -- authorize and token --------------------------------------------------------------------


def csrf_token() -> str:
    """The EHR session's CSRF token (made on first use)."""
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def csrf_ok() -> bool:
    """Does the posted form carry this session's CSRF token?"""
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD, "")
    if not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize() -> ResponseReturnValue:
    """Authorization endpoint (code flow, PKCE S256, SMART launch; fault: deny_consent)."""
    auth = sandbox()
    user = current_user()
    try:
        grant = auth.server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        if error.redirect_uri:
            return auth.server.handle_error_response(None, error)
        return render_template("auth_error.html", error=error), 400
    if user is None:
        return redirect(url_for("auth.login", next=_authorize_again()))
    if auth.faults.on("deny_consent"):
        return auth.server.create_authorization_response(grant=grant, grant_user=None)
    requested = scope_to_list(grant.request.payload.scope or "") or []
    launch = getattr(grant.request, "smart_launch", None)
    if launch is not None:
        grant.request.smart_context = {
            "patient": launch.patient,
            "encounter": launch.encounter,
            "launch_id": launch.launch_id,
        }
        return auth.server.create_authorization_response(grant=grant, grant_user=user)
    if is_plain_openid(grant.request.payload.scope or ""):
        # Plain OpenID Connect sign-in (Handoff's staff pages): the hospital's own app, so no
        # consent page, and no patient: the code carries no launch context.
        if getattr(grant, "prompt", None) in ("login", "select_account"):
            return redirect(url_for("auth.login", next=_authorize_again()))
        grant.request.smart_context = {}
        return auth.server.create_authorization_response(grant=grant, grant_user=user)
    # Standalone launch: approval page, with a patient picker for launch/patient.
    wants_patient = "launch/patient" in requested
    if request.method == "POST":
        if not csrf_ok():
            message = "The form was not sent from this EHR's page (CSRF token missing or wrong)"
            return render_template("auth_error.html", error=message), 400
        decision = request.form.get("decision")
        if decision == "deny":
            return auth.server.create_authorization_response(grant=grant, grant_user=None)
        if decision == "approve":
            context: dict[str, str | None] = {}
            if wants_patient:
                chosen = request.form.get("patient_choice", "")
                rows = picker_patients(auth.service, auth.now())
                row = next((p for p in rows if p.id == chosen), None)
                if row is None:
                    return render_template("auth_error.html", error="Choose a patient"), 400
                context["patient"] = chosen
                if "launch/encounter" in requested:
                    context["encounter"] = row.encounter_id
            grant.request.smart_context = context
            return auth.server.create_authorization_response(grant=grant, grant_user=user)
    patients = picker_patients(auth.service, auth.now()) if wants_patient else []
    return render_template(
        "authorize.html",
        client=grant.request.client,
        scopes=grant.request.scope.split() if grant.request.scope else [],
        wants_patient=wants_patient,
        patients=patients,
        user=user,
        csrf_token=csrf_token(),
    )


def _authorize_again() -> str:
    """This authorization request's path for after sign-in, without `prompt` (the sign-in
    page is where `prompt=login` / `select_account` are honoured: asking again would loop)."""
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "prompt"]
    return f"{request.path}?{urlencode(query)}"


@bp.route("/auth/userinfo", methods=["GET", "POST"])
def userinfo() -> Response | tuple[Response, int]:
    """OpenID Connect UserInfo: the id_token's user claims, for a bearer token with `openid`."""
    auth = sandbox()
    try:
        token = auth.protector.acquire_token(["openid"])
    except OAuth2Error as error:
        status, code = 401, "invalid_token"
        if isinstance(error, MissingAuthorizationError):
            code = ""
        elif isinstance(error, InsufficientScopeError):
            status, code = 403, "insufficient_scope"
        refusal = jsonify({"error": code or "invalid_request"})
        refusal.status_code = status
        refusal.headers["WWW-Authenticate"] = f'Bearer realm="{auth.fhir_base}"' + (
            f', error="{code}"' if code else ""
        )
        return refusal
    user = USERS.get(token.user_id or "")
    if user is None:
        return jsonify({"error": "invalid_token"}), 401
    response = jsonify(dict(user_claims(user, auth.fhir_base)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/auth/token")
def token() -> Response:
    """Token endpoint: authorization_code, refresh_token and client_credentials grants."""
    auth = sandbox()
    # One write transaction, serialised with every other writer, so that one code can never
    # be exchanged twice by racing requests (the store's writes inside join it). Not the bare
    # writer lock: holding it while waiting for a pooled connection starves the pool.
    with auth.service.db.write():
        return auth.server.create_token_response()


# -- bearer tokens on the FHIR API -----------------------------------------------------------


def authenticate() -> Access:
    """The caller's Access from its bearer token; FhirError(401) when there is none valid."""
    auth = sandbox()
    realm = auth.fhir_base
    try:
        token = auth.protector.acquire_token()
    except MissingAuthorizationError:
        raise FhirError(
            401,
            "Authorization: Bearer <access token> is required",
            "login",
            headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
        ) from None
    except OAuth2Error as error:
        raise FhirError(
            401,
            f"The access token is invalid, expired or revoked ({error.error})",
            "login",
            headers={
                "WWW-Authenticate": f'Bearer realm="{realm}", error="invalid_token", '
                'error_description="The access token is invalid, expired or revoked"'
            },
        ) from None
    user = USERS.get(token.user_id or "")
    return ScopeAccess(
        token.scope or "", token.patient, user.fhir_user if user else None, auth.fhir_base
    )
