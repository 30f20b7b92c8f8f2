"""Auth blueprint: SMART discovery, /auth/authorize, /auth/token, JWKS, EHR sign-in.

Protocol decisions are authlib's (auth/server.py); this module only does HTTP and screens:
EHR launches by the signed-in user are approved without a consent page, as EHRs do for
provider apps; a standalone launch gets an approval page (CSRF-protected) with a patient
picker when `launch/patient` is asked for. The fault switches of faults.py that concern
discovery and consent are applied here.
"""

from __future__ import annotations

import hmac
import secrets

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import MissingAuthorizationError, scope_to_list
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

from smartapp.sandbox.auth.client_auth import ALGORITHMS
from smartapp.sandbox.auth.models import USERS, EhrUser
from smartapp.sandbox.auth.scopes import CONTEXT_SCOPES, ScopeAccess
from smartapp.sandbox.auth.server import ADVERTISED_AUTH_METHODS
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
]
EXAMPLE_SCOPES_V1 = ["patient/*.read", "patient/*.write", "user/*.read", "user/*.write"]
CSRF_FIELD = "csrf_token"


# -- EHR session -------------------------------------------------------------------------


def current_user() -> EhrUser | None:
    """The EHR user signed in with the sandbox session cookie."""
    return USERS.get(session.get("user", ""))


def sign_in(user_id: str = DEMO_PHYSICIAN_ID) -> EhrUser:
    """Start an EHR session for `user_id` (the demo physician by default)."""
    session["user"] = user_id
    session.permanent = True
    return USERS[user_id]


@bp.route("/auth/login", methods=["GET", "POST"])
def login() -> Response | str:
    """Sign-in page: one button, the demo physician."""
    target = request.values.get("next") or url_for("chart.patients")
    if not target.startswith("/"):
        target = url_for("chart.patients")
    if request.method == "POST":
        sign_in()
        return redirect(target)
    return render_template("login.html", next=target, user=USERS[DEMO_PHYSICIAN_ID])


@bp.post("/auth/logout")
def logout() -> Response:
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
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "scopes_supported": list(CONTEXT_SCOPES)
            + (EXAMPLE_SCOPES_V1 if v1_only else EXAMPLE_SCOPES),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": capabilities,
        }
    )


@bp.get("/fhir/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect discovery for the id_token issuer (the FHIR base)."""
    auth = sandbox()
    return jsonify(
        {
            "issuer": auth.fhir_base,
            "authorization_endpoint": auth.url("/auth/authorize"),
            "token_endpoint": auth.url("/auth/token"),
            "jwks_uri": auth.url("/auth/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "fhirUser", "profile"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser", "name"],
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
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


@bp.route("/auth/authorize", methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int] | str:
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
        return redirect(url_for("auth.login", next=request.full_path))
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


@bp.post("/auth/token")
def token() -> Response:
    """Token endpoint: authorization_code and refresh_token grants."""
    auth = sandbox()
    # Serialised so that one code can never be exchanged twice by racing requests.
    with auth.service.db.write_lock:
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
